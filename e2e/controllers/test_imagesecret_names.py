"""Push/pull secret CR names: any DNS subdomain the derived names can bear (issue 11), on the real
control plane. The original accepted dotted names such as `my.app.pull`; so do we, and a name too
long for the account it derives is refused by the CRD schema with the limit in the message.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.controllers.imagesecret_support import (
    api_client,
    create_cr,
    make_registry,
    secret_values,
    wait_ready,
)
from registry_operator.api.names import MAX_IMAGE_SECRET_NAME_LENGTH, is_label_value
from registry_operator.controllers.imagesecret_desired import PULL, PUSH, ImageSecretKind
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.errors import Invalid
from registry_operator.passwords import verify_password

# Dotted (the original's example), a label's length, and the longest a push/pull CR may have.
NAMES = ["my.app.pull", "n" * 63, "a." + "b" * (MAX_IMAGE_SECRET_NAME_LENGTH - 2)]


@pytest.mark.parametrize("kind", [pytest.param(PUSH, id="push"), pytest.param(PULL, id="pull")])
def test_dotted_and_long_names_get_accounts_and_secrets(
    cluster: LocalCluster, namespace: str, start_operator: Any, kind: ImageSecretKind
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    start_operator(controllers="imagesecret")
    for name in NAMES:
        create_cr(api, kind, namespace, name, {"name": "registry", "namespace": namespace})
    for name in NAMES:
        wait_ready(api, kind, namespace, name, timeout=20)
        data = secret_values(api, namespace, kind.secret_name(name))
        account_name = f"{kind.mode}.{namespace}.{name}.1"
        assert data["username"] == account_name
        account = api.get(IMAGE_REGISTRY_ACCOUNTS, account_name, namespace)
        assert verify_password(data["password"], account["spec"]["password"])
        assert all(is_label_value(value) for value in account["metadata"]["labels"].values())


def test_a_name_too_long_for_its_account_is_refused_naming_the_limit(
    cluster: LocalCluster, namespace: str
) -> None:
    api = api_client(cluster)
    name = "x" * (MAX_IMAGE_SECRET_NAME_LENGTH + 1)
    with pytest.raises(Invalid) as refused:
        create_cr(api, PULL, namespace, name, None)
    assert f"{MAX_IMAGE_SECRET_NAME_LENGTH}" in str(refused.value)
    with pytest.raises(Invalid):
        create_cr(api, PUSH, namespace, "Not_A.Subdomain", None)
