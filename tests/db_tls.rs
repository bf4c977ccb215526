//! TLS to PostgreSQL (docs/database.md §1.1) against a real server started with a certificate from a
//! throwaway CA, accepting TCP clients over TLS only.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use diesel::sql_types::Bool;
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use kinitro::config::DatabaseUrl;
use kinitro::db::managed::{ClusterOptions, ManagedPostgres};

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// A CA (its certificate in `dir/ca.pem`) and a server certificate for `localhost` only, signed by
/// it, with its key (`dir/server.crt`, `dir/server.key`), readable by the server's user only.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kinitro test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let owner = std::fs::metadata(dir).unwrap();
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("server.crt", server.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        // PostgreSQL refuses a key that others can read.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&path, Some(owner.uid().into()), Some(owner.gid().into())).unwrap();
    }
}

/// The cluster's TCP URL of database `db` with `query` appended.
fn tcp(cluster: &ManagedPostgres, host: &str, db: &str, query: &str) -> DatabaseUrl {
    let url = cluster.tcp_url(db).unwrap();
    let url = url.as_str().replace("@127.0.0.1:", &format!("@{host}:"));
    DatabaseUrl::parse(&format!("{url}{query}")).unwrap()
}

/// Whether this connection is encrypted, as the server sees it.
async fn encrypted(url: &DatabaseUrl) -> Result<bool, String> {
    let mut conn = kinitro::db::connect(url).await.map_err(|e| e.to_string())?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.ssl)
}

#[tokio::test]
async fn sslmode_is_honoured_against_a_server_that_demands_tls() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().to_path_buf();
    let cluster = tokio::task::spawn_blocking(move || {
        ManagedPostgres::start(&ClusterOptions {
            data_dir,
            tcp_port: Some(free_port()),
        })
    })
    .await
    .unwrap()
    .expect("start PostgreSQL (run deploy/setup.sh)");
    let dir = root.path().join("postgres");
    certificates(&dir);
    // TLS on, and TCP clients accepted over TLS only; the Unix socket stays as it was.
    std::fs::write(
        dir.join("pg_hba.conf"),
        "local all all scram-sha-256\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostssl all all ::1/128 scram-sha-256\n",
    )
    .unwrap();
    // The Unix socket URL of the `postgres` database.
    let socket = cluster.url().as_str().replace("@/kinitro?", "@/postgres?");
    let mut admin = kinitro::db::connect(&DatabaseUrl::parse(&socket).unwrap())
        .await
        .unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    // One statement each: ALTER SYSTEM refuses the implicit transaction of a multi-statement batch.
    for sql in [
        "ALTER SYSTEM SET ssl = on".to_string(),
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", path("server.crt")),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", path("server.key")),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let require = tcp(&cluster, "127.0.0.1", "postgres", "?sslmode=require");
    let started = Instant::now();
    while encrypted(&require).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no connection with sslmode=require within 20 s: {:?}",
            encrypted(&require).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = path("ca.pem");

    // require: encrypted, the certificate not checked (its CA is trusted nowhere).
    assert_eq!(encrypted(&require).await, Ok(true));
    // prefer, the default: encrypted when the server offers it.
    let prefer = tcp(&cluster, "127.0.0.1", "postgres", "");
    assert_eq!(encrypted(&prefer).await, Ok(true));
    // disable: plain TCP, which this server refuses.
    let plain = tcp(&cluster, "127.0.0.1", "postgres", "?sslmode=disable");
    let e = encrypted(&plain).await.unwrap_err();
    assert!(e.contains("no encryption"), "{e}");
    // verify-full: the CA must be trusted, and the certificate must name the host.
    let full = |host: &str, q: &str| {
        tcp(
            &cluster,
            host,
            "postgres",
            &format!("?sslmode=verify-full{q}"),
        )
    };
    let trusted = format!("&sslrootcert={ca}");
    assert_eq!(encrypted(&full("localhost", &trusted)).await, Ok(true));
    let e = encrypted(&full("localhost", "")).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    let e = encrypted(&full("127.0.0.1", &trusted)).await.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    // verify-ca: the chain is checked, not the name.
    let ca_only = tcp(
        &cluster,
        "127.0.0.1",
        "postgres",
        &format!("?sslmode=verify-ca{trusted}"),
    );
    assert_eq!(encrypted(&ca_only).await, Ok(true));
    let e = encrypted(&tcp(
        &cluster,
        "127.0.0.1",
        "postgres",
        "?sslmode=verify-ca",
    ))
    .await
    .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // A missing sslrootcert is said as such.
    let missing = full("localhost", "&sslrootcert=/nonexistent/ca.pem");
    let e = encrypted(&missing).await.unwrap_err();
    assert!(
        e.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{e}"
    );

    // Every way the services open connections: creating the database and migrating it (as at
    // start-up), then the pool.
    let app = tcp(
        &cluster,
        "localhost",
        "tls_app",
        &format!("?sslmode=verify-full{trusted}"),
    );
    kinitro::db::prepare(&app).await.unwrap();
    let pool = kinitro::db::pool(&app, 2).unwrap();
    let mut conn = pool.get().await.unwrap();
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert!(row.ssl);
    let plain_app = tcp(&cluster, "127.0.0.1", "tls_app", "?sslmode=disable");
    assert!(kinitro::db::pool(&plain_app, 1)
        .unwrap()
        .get()
        .await
        .is_err());

    // The Unix socket never uses TLS, whatever the mode (as with libpq).
    let socket = DatabaseUrl::parse(&format!("{socket}&sslmode=require")).unwrap();
    assert_eq!(encrypted(&socket).await, Ok(false));
}
