"""The node agent (`registry-operator node-agent`): registry CA trust and name resolution on nodes.

May use `kube/` and `api/`, never `controllers/`.
"""
