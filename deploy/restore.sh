#!/usr/bin/env bash
# Restore a dump made by deploy/backup.sh into a PostgreSQL + PostGIS database.
#
#   deploy/restore.sh [-d DATABASE_URL] [-c] DUMP
#
#   -d URL   database to restore into (default: $GRIDWATCH_DATABASE_URL)
#   -c       replace what the database already holds (otherwise it must hold no tables)
#
# Restore into a new, empty database and point GRIDWATCH_DATABASE_URL at it, or stop web,
# workers and beat and restore over the old one with -c. The restore runs in one transaction:
# it either completes or leaves the database as it was. Afterwards run `gridwatch db upgrade`
# when the dump comes from an older GridWatch version.
set -euo pipefail

say() { printf 'restore.sh: %s\n' "$*" >&2; }
fail() { say "$*"; exit 2; }

url="${GRIDWATCH_DATABASE_URL:-}"
clean=no
while getopts ":d:ch" opt; do
    case "$opt" in
        d) url="$OPTARG" ;;
        c) clean=yes ;;
        h) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        :) fail "option -$OPTARG needs a value (see -h)" ;;
        *) fail "unknown option -$OPTARG (see -h)" ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -eq 1 ] || fail "name one dump file to restore (see -h)"
dump="$1"

[ -n "$url" ] || fail "no database: pass -d URL or set GRIDWATCH_DATABASE_URL"
case "$url" in
    postgresql://* | postgresql+psycopg://* | postgres://*) ;;
    *) fail "the target is not a postgresql:// URL" ;;
esac
url="postgresql://${url#*://}"
[ -f "$dump" ] || fail "the dump '$dump' does not exist"
pg_restore --list "$dump" >/dev/null 2>&1 \
    || fail "'$dump' is not a pg_dump custom-format file (made by backup.sh)"

tables="$(psql --no-psqlrc -w -X -At --dbname="$url" -c \
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'" 2>&1)" \
    || fail "cannot connect to the database: $(printf '%s' "$tables" | head -n 1)"
if [ "$tables" != 0 ] && [ "$clean" = no ]; then
    fail "the database already holds $tables tables: restore into a new empty database, or pass -c to replace them"
fi

options=(--no-password --no-owner --no-privileges --exit-on-error --single-transaction)
if [ "$clean" = yes ]; then
    options+=(--clean --if-exists)
fi
if ! errors="$(pg_restore "${options[@]}" --dbname="$url" "$dump" 2>&1)"; then
    fail "pg_restore failed, nothing was changed: $(printf '%s' "$errors" | grep -m 1 -i 'error' || printf '%s' "$errors" | head -n 1)"
fi
revision="$(psql --no-psqlrc -w -X -At --dbname="$url" -c 'SELECT version_num FROM alembic_version' 2>/dev/null || true)"
say "restored '$dump' (schema revision ${revision:-unknown})"
