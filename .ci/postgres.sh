# Sourced by .ci/test: a throwaway PostgreSQL cluster for the tests.
#   pg_start   install Debian's postgresql if missing, initdb a cluster in a
#              temporary directory (as the unprivileged `postgres` user when
#              run as root), listening on a unix socket only; exports
#              TEST_POSTGRES_URL
#   pg_stop    stop it and remove the directory
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

pg_start() {
  if [ -z "$(pg_bin)" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin; bin=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/civkit-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U civkit --auth=trust -E UTF8 >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start \
    -o "-c listen_addresses='' -c unix_socket_directories='$PG_DIR' -c max_connections=400 -c fsync=on" >/dev/null
  export TEST_POSTGRES_URL="host=$PG_DIR user=civkit dbname=postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $PG_DIR" >&2
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
