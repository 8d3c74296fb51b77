use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clip_gallery::Config;

const USAGE: &str = "\
clip-gallery: a web page and JSON API over the clip_search PostgreSQL extension

usage: clip-gallery [options]
  --listen ADDR        address to serve on (default 127.0.0.1:8080; env CLIP_GALLERY_LISTEN)
  --database CONN      PostgreSQL connection string, libpq style or a postgresql:// URL
                       (default \"host=localhost user=postgres dbname=gallery\"; env CLIP_GALLERY_DATABASE)
  --pool-size N        database connections (default 4)
  --max-body-mb N      largest request body in MiB; larger uploads get 413 (default 32)
  --import-dir DIR     on the first run, store the images of DIR
  --quiet              do not log requests
The database user must be able to CREATE EXTENSION clip_search (or it must exist already) and clip.model_dir must
be set. The tables live in the schema 'gallery' and are created with the model's dimension.";

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut config = Config {
        listen: std::env::var("CLIP_GALLERY_LISTEN")
            .unwrap_or_else(|_| "127.0.0.1:8080".into())
            .parse::<SocketAddr>()
            .map_err(|e| format!("CLIP_GALLERY_LISTEN: {e}"))?,
        database: std::env::var("CLIP_GALLERY_DATABASE")
            .unwrap_or_else(|_| "host=localhost user=postgres dbname=gallery".into()),
        pool_size: 4,
        max_body_bytes: 32 << 20,
        import_dir: None,
        log_requests: true,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => config.listen = value("--listen")?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--database" => config.database = value("--database")?,
            "--pool-size" => {
                config.pool_size = value("--pool-size")?.parse().map_err(|e| format!("--pool-size: {e}"))?;
                if !(1..=64).contains(&config.pool_size) {
                    return Err("--pool-size must be between 1 and 64".into());
                }
            }
            "--max-body-mb" => {
                let mb: f64 = value("--max-body-mb")?.parse().map_err(|e| format!("--max-body-mb: {e}"))?;
                if !(mb > 0.0 && mb <= 4096.0) {
                    return Err("--max-body-mb must be above 0 and at most 4096".into());
                }
                config.max_body_bytes = (mb * (1 << 20) as f64) as usize;
            }
            "--import-dir" => config.import_dir = Some(PathBuf::from(value("--import-dir")?)),
            "--quiet" => config.log_requests = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1).collect()) {
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
    match clip_gallery::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clip-gallery: {e}");
            ExitCode::FAILURE
        }
    }
}
