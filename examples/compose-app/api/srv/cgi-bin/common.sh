# Shared by the API's CGIs. kv METHOD QUERY [BODY]: one HTTP request to the kv service with
# busybox nc (busybox's wget cannot run in these images), by name through the embedded DNS.
# Sets $status (the HTTP status code) and $body.
kv() {
    request_body=${3-}
    response=$(printf '%s /cgi-bin/kv?%s HTTP/1.0\r\nHost: %s\r\nContent-Length: %s\r\n\r\n%s' \
        "$1" "$2" "$KV_HOST" "${#request_body}" "$request_body" |
        nc -w 5 "$KV_HOST" "$KV_PORT" | tr -d '\r')
    status=$(echo "$response" | sed -n '1s/^HTTP\/1\.[01] \([0-9]*\).*/\1/p')
    body=$(echo "$response" | sed '1,/^$/d')
}

json() { # STATUS JSON, and a line of log on stderr (httpd passes it to the container's)
    echo "$REQUEST_METHOD $SCRIPT_NAME${QUERY_STRING:+?$QUERY_STRING} -> $1" >&2
    printf 'Status: %s\r\nContent-Type: application/json\r\n\r\n%s\n' "$1" "$2"
    exit 0
}

unavailable() {
    json "502 Bad Gateway" "{\"error\": \"the kv service did not answer (status '${status:-none}')\"}"
}
