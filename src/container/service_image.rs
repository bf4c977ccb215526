//! The images of the compose stacks, built with no registry (docs/deployment.md §1): the kinitro
//! runtime image and a PostgreSQL image, both `FROM scratch` over roots assembled from this
//! machine's files the way the environment image is ([`super::image`]).
//!
//! The PostgreSQL programs come from the host's Debian server package (`/usr/lib/postgresql/<v>`,
//! installed by deploy/setup.sh), with their data files, the time zone database and
//! `dash` as `/bin/sh` (initdb needs one; the PostgreSQL image's entrypoint is a script).

use std::path::{Path, PathBuf};

use super::image::{kinitro_root, RootFs, BINARY, LIB_DIR, USER_ID};

/// The uid and gid the PostgreSQL server runs as in its image.
pub const POSTGRES_USER_ID: u32 = 999;
/// The PostgreSQL image's data directory (the volume of the compose file).
pub const PGDATA: &str = "/var/lib/postgresql/data";
/// The runtime image's home and data directory (`kinitro run --data-dir` and the spool live below).
pub const KINITRO_HOME: &str = "/var/lib/kinitro";

/// The host's PostgreSQL server: (major version, `/usr/lib/postgresql/<v>`), the highest installed.
pub fn host_postgres() -> Result<(u32, PathBuf), String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("no PostgreSQL server in /usr/lib/postgresql ({e}): run deploy/setup.sh")
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            e.path()
                .join("bin/postgres")
                .is_file()
                .then(|| (v, e.path()))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server in /usr/lib/postgresql: run deploy/setup.sh".into())
}

/// Adds the server programs (with their libraries), its extension modules, its data files and the
/// time zone database, at their host paths (the programs find their data relative to themselves),
/// and `dash` as `/bin/sh`.
fn add_postgres(fs: &mut RootFs) -> Result<u32, String> {
    let (version, dir) = host_postgres()?;
    let rel = |p: &Path| p.to_string_lossy().trim_start_matches('/').to_string();
    for sub in ["bin", "lib"] {
        let entries =
            std::fs::read_dir(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        for item in entries {
            let path = item.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // JIT (LLVM, 100 MB) is optional: without its module the server runs without JIT.
            if !path.is_file() || name.starts_with("llvmjit") {
                continue;
            }
            let mode = if sub == "bin" { 0o755 } else { 0o644 };
            fs.add_program(&rel(&path), &path, mode)?;
        }
    }
    let share = PathBuf::from(format!("/usr/share/postgresql/{version}"));
    fs.add_tree(&rel(&share), &share)?;
    // initdb runs the server through popen(3), that is through /bin/sh.
    fs.add_program("bin/sh", Path::new("/bin/dash"), 0o755)?;
    let zoneinfo = Path::new("/usr/share/zoneinfo");
    if zoneinfo.is_dir() {
        fs.add_tree("usr/share/zoneinfo", zoneinfo)?;
    }
    Ok(version)
}

/// The runtime image: the environment image's root plus the PostgreSQL server (for `kinitro run`'s
/// managed database), `kinitro` as the CMD and `kinitro healthcheck` as the HEALTHCHECK.
pub(super) fn runtime(binary: &Path, assets: &Path) -> Result<(RootFs, String), String> {
    let mut fs = kinitro_root(binary, assets)?;
    let version = add_postgres(&mut fs)?;
    fs.add_user("kinitro", USER_ID, KINITRO_HOME);
    let home = KINITRO_HOME.trim_start_matches('/');
    fs.add_owned_dir(home, USER_ID, 0o755);
    fs.add_owned_dir(&format!("{home}/data"), USER_ID, 0o700);
    fs.add_owned_dir(&format!("{home}/state"), USER_ID, 0o700);
    let kinitro_version = env!("CARGO_PKG_VERSION");
    let dockerfile = format!(
        r#"FROM scratch
COPY rootfs/ /
ADD owned.tar /
COPY kinitro /{BINARY}
ENV PATH=/usr/local/bin:/usr/lib/postgresql/{version}/bin:/usr/bin:/bin \
    LD_LIBRARY_PATH=/{LIB_DIR} \
    KINITRO_METAWORLD_ASSETS_DIR={assets_dir} \
    HOME={KINITRO_HOME} XDG_DATA_HOME={KINITRO_HOME} XDG_STATE_HOME={KINITRO_HOME}/state \
    XDG_CACHE_HOME=/tmp LP_NUM_THREADS=1 KINITRO_LOG_FORMAT=json
LABEL org.opencontainers.image.title=kinitro org.opencontainers.image.version={kinitro_version}
USER {USER_ID}:{USER_ID}
WORKDIR {KINITRO_HOME}
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["kinitro", "healthcheck"]
CMD ["kinitro", "--help"]
"#,
        assets_dir = super::image::ASSETS_DIR,
    );
    Ok((fs, dockerfile))
}

/// The PostgreSQL image's entrypoint (dash): on an empty volume, `initdb` with the superuser
/// `$POSTGRES_USER` and `$POSTGRES_PASSWORD` (read from stdin, never an argument), password logins
/// over the network, trust on the container's own socket (as `docker exec … pg_dump` needs), and
/// `$POSTGRES_DB` created in single-user mode; then the server in the foreground, as PID 1's
/// replacement so that `docker stop` is its fast shutdown.
pub const ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "kinitro-postgres: POSTGRES_PASSWORD is empty (set it in deploy/database.env)" >&2
    exit 1
  fi
  printf '%s\n' "$POSTGRES_PASSWORD" | initdb -D "$PGDATA" -U "$user" --pwfile=/dev/stdin \
    -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE "%s";\n' "$db" | postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
  echo "kinitro-postgres: initialised $PGDATA (database $db, user $user)" >&2
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"#;

/// The PostgreSQL image: the server, `dash` and [`ENTRYPOINT`], running as `postgres` (uid 999).
pub(super) fn postgres() -> Result<(RootFs, String), String> {
    let mut fs = RootFs::default();
    let version = add_postgres(&mut fs)?;
    fs.add_data(
        "usr/local/bin/kinitro-postgres-entrypoint",
        ENTRYPOINT,
        0o755,
    );
    fs.add_user("postgres", POSTGRES_USER_ID, "/var/lib/postgresql");
    fs.add_owned_dir("var/lib/postgresql", POSTGRES_USER_ID, 0o755);
    fs.add_owned_dir(PGDATA.trim_start_matches('/'), POSTGRES_USER_ID, 0o700);
    fs.add_owned_dir("var/run/postgresql", POSTGRES_USER_ID, 0o2775);
    fs.add_owned_dir("tmp", 0, 0o1777);
    let dockerfile = format!(
        r#"FROM scratch
COPY rootfs/ /
ADD owned.tar /
ENV PATH=/usr/local/bin:/usr/lib/postgresql/{version}/bin:/usr/bin:/bin \
    LD_LIBRARY_PATH=/{LIB_DIR} \
    PGDATA={PGDATA} TZ=UTC LANG=C
LABEL org.opencontainers.image.title=kinitro-postgres org.opencontainers.image.version={version}
USER {POSTGRES_USER_ID}:{POSTGRES_USER_ID}
STOPSIGNAL SIGINT
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=5 CMD ["pg_isready", "-q"]
ENTRYPOINT ["/usr/local/bin/kinitro-postgres-entrypoint"]
"#
    );
    Ok((fs, dockerfile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoint_keeps_the_password_off_command_lines() {
        assert!(ENTRYPOINT.contains("--pwfile=/dev/stdin"));
        assert!(ENTRYPOINT.contains("unset POSTGRES_PASSWORD"));
        assert!(ENTRYPOINT.contains("exec postgres"));
    }
}
