use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clip_gallery::{Config, SetupConfig};

const USAGE: &str = "\
clip-gallery: a web page and JSON API over the clip_search PostgreSQL extension

usage: clip-gallery [options]             serve, connected as the gallery's role
       clip-gallery --setup [options]     set up the database, connected as a superuser
  --database CONN      PostgreSQL connection string, libpq style or a postgresql:// URL
                       (default \"host=localhost user=clip_gallery dbname=gallery\", with --setup
                       \"host=localhost user=postgres dbname=gallery\"; env CLIP_GALLERY_DATABASE)
serving:
  --listen ADDR        address to serve on (default 127.0.0.1:8080; env CLIP_GALLERY_LISTEN)
  --pool-size N        database connections (default 4)
  --max-body-mb N      largest request body in MiB; larger uploads get 413 (default 32)
  --quiet              do not log requests
set-up (--setup):
  --role NAME          the login role the server connects as (default clip_gallery)
  --import-dir DIR     on the first set-up, store the images of DIR
The set-up creates or updates the extension clip_search, the tables in the schema 'gallery' (with the model's
dimension; re-embedded when the model changed), and the server's role, which may only read and write their rows;
clip.model_dir must be set. The server changes no schema: it refuses to run as a superuser, or when the stored
vectors were made by another model (run the set-up again).";

/// What the command line asks for.
enum Command {
    Serve(Config),
    SetUp(SetupConfig),
}

fn parse(args: Vec<String>) -> Result<Command, String> {
    let setup = args.iter().any(|a| a == "--setup");
    let default_user = if setup { "postgres" } else { "clip_gallery" };
    let database = std::env::var("CLIP_GALLERY_DATABASE")
        .unwrap_or_else(|_| format!("host=localhost user={default_user} dbname=gallery"));
    let mut config = Config {
        listen: std::env::var("CLIP_GALLERY_LISTEN")
            .unwrap_or_else(|_| "127.0.0.1:8080".into())
            .parse::<SocketAddr>()
            .map_err(|e| format!("CLIP_GALLERY_LISTEN: {e}"))?,
        database,
        pool_size: 4,
        max_body_bytes: 32 << 20,
        log_requests: true,
    };
    let mut role = "clip_gallery".to_string();
    let mut import_dir = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match (arg.as_str(), setup) {
            ("--setup", _) => {}
            ("--database", _) => config.database = value("--database")?,
            ("--listen", false) => {
                config.listen = value("--listen")?.parse().map_err(|e| format!("--listen: {e}"))?
            }
            ("--pool-size", false) => {
                config.pool_size = value("--pool-size")?.parse().map_err(|e| format!("--pool-size: {e}"))?;
                if !(1..=64).contains(&config.pool_size) {
                    return Err("--pool-size must be between 1 and 64".into());
                }
            }
            ("--max-body-mb", false) => {
                let mb: f64 = value("--max-body-mb")?.parse().map_err(|e| format!("--max-body-mb: {e}"))?;
                if !(mb > 0.0 && mb <= 4096.0) {
                    return Err("--max-body-mb must be above 0 and at most 4096".into());
                }
                config.max_body_bytes = (mb * (1 << 20) as f64) as usize;
            }
            ("--quiet", false) => config.log_requests = false,
            ("--role", true) => role = value("--role")?,
            ("--import-dir", true) => import_dir = Some(PathBuf::from(value("--import-dir")?)),
            ("-h" | "--help", _) => return Err(String::new()),
            (other @ ("--role" | "--import-dir"), false) => return Err(format!("{other} goes with --setup")),
            (other, true) if other.starts_with("--") => return Err(format!("{other} is not a --setup option")),
            (other, _) => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(if setup {
        Command::SetUp(SetupConfig { database: config.database, role, import_dir })
    } else {
        Command::Serve(config)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("clip-gallery: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Serve(config) => clip_gallery::run(config).await,
        Command::SetUp(config) => clip_gallery::set_up(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clip-gallery: {e}");
            ExitCode::FAILURE
        }
    }
}
