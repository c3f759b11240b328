# Sourced by bench/run.sh and bench/profile.sh: free loopback ports, and the benchmark gateway's config.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# A benchmark gateway: one GitHub-scheme source, a rate limit out of the way, forwarding to echo.
# gateway_toml LISTEN_PORT ADMIN_PORT STORE REDIS_PORT FORWARD_KIND ECHO_PORT KEY_PREFIX [SOURCE_LINE]
gateway_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
[rate_limit]
per_second = 1000000
burst = 1000000
[dedup]
store = "$3"
redis_url = "redis://127.0.0.1:$4"
key_prefix = "$7"
[[source]]
name = "bench"
path = "/webhooks/bench"
scheme = "github"
secrets = ["bench-secret-0123456789"]
${8:-}
[source.forward]
kind = "$5"
url = "http://127.0.0.1:$6/webhooks/bench"
TOML
}
