"""A small controller framework with client-go / controller-runtime semantics.

It knows nothing about registries. A reconciler is wired up like this::

    client = Client.load(kubeconfig)
    manager = Manager(client, ManagerOptions(leader_election=True, leader_election_id="x",
                                             leader_election_namespace="ops"))
    widgets = manager.informers.informer(WIDGETS, namespace=ns)
    secrets = manager.informers.informer(SECRETS, namespace=ns)
    controller = Controller("widget", WidgetReconciler(client, widgets.store))
    controller.watch_for(widgets, GenerationChangedPredicate())
    controller.watch_owned(secrets, WIDGETS)
    manager.add_controller(controller)
    sys.exit(manager.run())

Modules: `client` (the REST verbs), `rest` (sending one request: timeouts, deadlines, connect
retries), `errors` (typed API errors), `retry` (conflict and connect retry policy), `watch` (watch
streams), `objects` (typed accessors), `resources` (descriptors), `informer` (reflector, shared
informers), `cache` (indexed store), `workqueue` (rate-limited queue), `controller`, `manager`,
`leaderelection`, `events`, `metrics`, `clock` (injectable time).
"""
