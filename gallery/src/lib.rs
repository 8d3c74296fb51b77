//! clip-gallery: a web page and a JSON API over the clip_search extension. PostgreSQL is the only store: images
//! are bytea, embeddings are pgvector columns filled by the extension, and every search is an SQL query.
pub mod api;
pub mod db;
pub mod error;
pub mod listener;
pub mod sniff;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// libpq-style connection string or postgresql:// URL.
    pub database: String,
    pub pool_size: usize,
    /// Largest request body; larger uploads get 413.
    pub max_body_bytes: usize,
    pub log_requests: bool,
}

/// What `clip-gallery --setup` does, as a superuser.
#[derive(Debug, Clone)]
pub struct SetupConfig {
    /// libpq-style connection string or postgresql:// URL of a superuser's connection.
    pub database: String,
    /// The login role the server connects as: created if missing, granted only what the gallery's tables need.
    pub role: String,
    /// On the first set-up, import the images of this folder.
    pub import_dir: Option<PathBuf>,
}

/// The set-up: the extension, the tables (re-embedded when the model changed), the server's role, the first
/// import. Changes the schema; the server never does.
pub async fn set_up(config: SetupConfig) -> Result<(), String> {
    let mut pg: tokio_postgres::Config =
        config.database.parse().map_err(|e| format!("bad database connection string: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name("clip-gallery setup");
    }
    let (mut client, connection) =
        pg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("cannot connect to the database: {e}"))?;
    let connection = tokio::spawn(connection);
    let model = db::set_up(&mut client, &config.role).await?;
    eprintln!("clip-gallery: {}", model.describe());
    if let Some(dir) = &config.import_dir {
        match db::import_dir(&mut client, dir).await? {
            0 => {}
            n => eprintln!("clip-gallery: first run: imported {n} images from {}", dir.display()),
        }
    }
    drop(client);
    let _ = connection.await;
    println!("clip-gallery: set-up done; the server connects as the role {}", config.role);
    Ok(())
}

pub async fn run(config: Config) -> Result<(), String> {
    let mut pg: tokio_postgres::Config =
        config.database.parse().map_err(|e| format!("bad database connection string: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name("clip-gallery");
    }
    // An HNSW scan returns at most ef_search rows: let it return every result a request may ask for.
    let options = format!("{} -c hnsw.ef_search={}", pg.get_options().unwrap_or(""), api::MAX_K);
    pg.options(options.trim());
    let manager =
        Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        // The most recently used connection first: it has the model loaded.
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(10)))
        .wait_timeout(Some(Duration::from_secs(60)))
        .build()
        .map_err(|e| format!("database pool: {e}"))?;

    let model = db::check_schema(&pool).await?;
    eprintln!("clip-gallery: {}", model.describe());
    warm_up(&pool, config.pool_size.max(1)).await?;

    let listener =
        TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("clip-gallery: listening on http://{address}");
    let _ = std::io::stdout().flush();
    let state = api::AppState { pool, model: Arc::new(model), max_body_bytes: config.max_body_bytes };
    axum::serve(listener::Listener(listener), api::router(state, config.log_requests))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))?;
    eprintln!("clip-gallery: stopped");
    Ok(())
}

/// Opens every pooled connection and has its backend load the text tower, so that no search pays for loading it.
async fn warm_up(pool: &Pool, n: usize) -> Result<(), String> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let client = pool.get().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
        client
            .query_one("SELECT clip_embed_text('warm up')", &[])
            .await
            .map_err(|e| format!("the model is not usable: {e}"))?;
        held.push(client);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
