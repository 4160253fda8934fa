#!/usr/bin/env bash
# Back up the GridWatch PostgreSQL + PostGIS database with pg_dump's custom format.
#
#   deploy/backup.sh [-d DATABASE_URL] [-o DIR] [-k KEEP] [-v VAR_DIR]
#
#   -d URL   database (default: $GRIDWATCH_DATABASE_URL); postgresql:// or postgresql+psycopg://
#   -o DIR   where the dump goes (default: ./backups); created if missing
#   -k N     keep only the newest N dumps in DIR (default: keep all)
#   -v DIR   also archive this var directory (import reports, uploads) next to the dump
#
# Writes DIR/gridwatch-<database>-<UTC time>.dump and prints its path. The dump is checked
# with `pg_restore --list` before it gets its final name, so a file with that name is always
# complete. Restore with deploy/restore.sh. Use pg_dump of the server's major version or
# newer (in Docker Compose: run this script inside the `db` container).
#
# Prefer a ~/.pgpass file over a password in the URL: the URL shows in the process list.
set -euo pipefail

say() { printf 'backup.sh: %s\n' "$*" >&2; }
fail() { say "$*"; exit 2; }

url="${GRIDWATCH_DATABASE_URL:-}"
out_dir="backups"
keep=""
var_dir=""
while getopts ":d:o:k:v:h" opt; do
    case "$opt" in
        d) url="$OPTARG" ;;
        o) out_dir="$OPTARG" ;;
        k) keep="$OPTARG" ;;
        v) var_dir="$OPTARG" ;;
        h) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        :) fail "option -$OPTARG needs a value (see -h)" ;;
        *) fail "unknown option -$OPTARG (see -h)" ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -eq 0 ] || fail "unexpected argument '$1' (see -h)"

[ -n "$url" ] || fail "no database: pass -d URL or set GRIDWATCH_DATABASE_URL"
case "$url" in
    postgresql://* | postgresql+psycopg://* | postgres://*) ;;
    sqlite:*) fail "the database is SQLite: stop GridWatch and copy the file (sqlite3 FILE '.backup OUT'), this script backs up PostgreSQL" ;;
    *) fail "GRIDWATCH_DATABASE_URL is not a postgresql:// URL" ;;
esac
# libpq does not know SQLAlchemy's driver suffix.
url="postgresql://${url#*://}"
if [ -n "$keep" ] && ! [[ "$keep" =~ ^[1-9][0-9]*$ ]]; then
    fail "-k must be a whole number of dumps to keep, at least 1, not '$keep'"
fi
if [ -n "$var_dir" ] && [ ! -d "$var_dir" ]; then
    fail "the var directory '$var_dir' does not exist"
fi
command -v pg_dump >/dev/null || fail "pg_dump is not installed (Debian: apt-get install postgresql-client)"

database="$(psql --no-psqlrc -w -X -At --dbname="$url" -c 'SELECT current_database()' 2>&1)" \
    || fail "cannot connect to the database: $(printf '%s' "$database" | head -n 1)"
mkdir -p "$out_dir" || fail "cannot create the directory '$out_dir'"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="$out_dir/gridwatch-$database-$stamp.dump"
partial="$target.partial"
trap 'rm -f "$partial"' EXIT

if ! errors="$(pg_dump --no-password --format=custom --compress=6 --file="$partial" --dbname="$url" 2>&1)"; then
    fail "pg_dump failed: $(printf '%s' "$errors" | head -n 1)"
fi
if ! pg_restore --list "$partial" >/dev/null 2>&1; then
    fail "the dump written to '$partial' cannot be read back; nothing kept"
fi
mv "$partial" "$target"
trap - EXIT

if [ -n "$var_dir" ]; then
    tar -C "$var_dir" -czf "$out_dir/gridwatch-$database-$stamp-var.tar.gz" \
        --exclude=./celerybeat-schedule . || fail "cannot archive '$var_dir'"
fi

if [ -n "$keep" ]; then
    # Names sort by time (UTC stamps of one format), newest last.
    mapfile -t dumps < <(ls -1 "$out_dir"/gridwatch-"$database"-*.dump 2>/dev/null | sort)
    excess=$(( ${#dumps[@]} - keep ))
    for ((i = 0; i < excess; i++)); do
        rm -f "${dumps[$i]}" "${dumps[$i]%.dump}-var.tar.gz"
    done
fi
printf '%s\n' "$target"
