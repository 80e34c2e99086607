"""A small controller framework with client-go / controller-runtime semantics.

It knows nothing about registries. A reconciler is wired up like this::

    client = Client.load(kubeconfig)
    manager = Manager(client, ManagerOptions(leader_election=True, leader_election_id="x",
                                             leader_election_namespace="ops"))
    widgets = manager.informers.informer(WIDGETS, namespace=ns)
    # Cache what the reconciler reads, not the whole kind: the Secrets it creates (by label) ...
    secrets = manager.informers.informer(SECRETS, namespace=ns, label_selector="app=widgets")
    # ... and the Secrets widgets name in their spec (one watch per name).
    named = manager.informers.by_name(SECRETS)
    named.track_references(widgets, lambda w: [f"{ns}/{w['spec']['secretName']}"])
    controller = Controller("widget", WidgetReconciler(client, widgets.store, named.store))
    controller.watch_for(widgets, GenerationChangedPredicate())
    controller.watch_owned(secrets, WIDGETS)
    controller.watch_mapped(named, widgets_naming_it)
    manager.add_controller(controller)
    sys.exit(manager.run())

Modules: `client` (the REST verbs), `rest` (sending one request: timeouts, deadlines, connect
retries), `errors` (typed API errors), `retry` (conflict and connect retry policy), `watch` (watch
streams), `objects` (typed accessors), `resources` (descriptors), `reflector` (the list + watch
loop), `informer` (shared informers, event handlers), `byname` (per-name watches), `factory` (the
shared informer factory), `transforms` (what a cache keeps), `cache` (indexed store), `workqueue`
(rate-limited queue), `controller`, `manager`, `leaderelection`, `events`, `metrics`, `clock`
(injectable time).
"""
