#!/bin/sh
# docker_auth ext_auth shim: asks the registry pod's authn sidecar whether a login is valid.
#
#   ext_auth: {command: /bin/sh, args: [/path/ext_auth_shim.sh, "http://127.0.0.1:PORT/authn"]}
#
# docker_auth writes "<user> <password>" (no newline) to stdin and reads the exit code:
# 0 allow (stdout: the sidecar's {"labels": {...}} JSON), 1 deny, 2 no match, 3 error.
# The credentials only pass through stdin and the request body: never argv, env, files or output.
# Needs only busybox (sh, wget), as in the stock cesanta/docker_auth image. Forks as little as it
# can: one subshell and wget; the status is read with shell patterns, not sed or tail.

url="${1:?usage: ext_auth_shim.sh AUTHN_URL}"
# The sidecar is on loopback; a proxy configured for the container must not see the credentials.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY

# busybox wget, which can POST a pipe (GNU wget cannot); in the docker_auth image it is `wget`.
if command -v busybox >/dev/null 2>&1; then wget="busybox wget"; else wget=wget; fi

# wget writes the response body to stdout only for a 2xx answer; send it straight to our stdout
# (fd 3) and capture wget's stderr, which holds the status line (-S) and any error message.
exec 3>&1
response=$($wget -q -S -O - --post-file=/dev/stdin "$url" 2>&1 1>&3)
exec 3>&-

# The last status line's code, with parameter expansion only (no sed, tail or pipes to fork).
status=
case "$response" in
	*"HTTP/1."?" "[0-9][0-9][0-9]*)
		status=${response##*HTTP/1.? }
		status=${status%%[!0-9]*}
		;;
esac
case "$status" in
	200) exit 0 ;;
	401 | 403) exit 1 ;;
	404) exit 2 ;;
	*)
		echo "ext_auth_shim: authn sidecar at $url failed (HTTP status: ${status:-none})" >&2
		exit 3
		;;
esac
