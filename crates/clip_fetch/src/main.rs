//! clip-fetch: installs a ready ONNX CLIP model into a directory that clip_search loads (`clip.model_dir`).
//!
//! Models come from the Hugging Face hub, in the layout of Immich's exports (`immich-app/<model>__<pretrained>`:
//! see `clip_core::immich`), or from such a folder copied by hand (`--from`). Files are downloaded into a staging
//! folder inside the models directory, resumed where a transfer was cut, checked against the hub's sizes and
//! hashes, and the model appears under its name only once all of it is there and checked, by one rename. A model
//! is never downloaded by a database backend: this runs beside the server, as a user who can write the models
//! directory.
mod hub;
mod install;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: clip-fetch [options] MODEL
       clip-fetch [options] --from DIR NAME

Installs a CLIP model in ONNX (Immich's export layout) into MODELS/NAME, ready for clip.model_dir.
MODEL is the name of one of Immich's exports (ViT-B-32__openai, ViT-B-16-SigLIP2__webli, ...), which is the
repository immich-app/MODEL, or a repository OWNER/NAME of the same layout.

options:
  --models DIR     where models are installed (default: $CLIP_MODELS_DIR, else ./models)
  --endpoint URL   the hub or a mirror (default: $HF_ENDPOINT, else https://huggingface.co)
  --revision REV   a branch, tag or commit of the repository (default: main)
  --from DIR       install from a folder in Immich's layout instead of the hub (no network)
  --force          replace a model already installed under that name
  --quiet          no progress display
  -h, --help       this text";

pub struct Options {
    pub model: String,
    pub models: PathBuf,
    pub endpoint: String,
    pub revision: String,
    pub from: Option<PathBuf>,
    pub force: bool,
    pub quiet: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut options = Options {
        model: String::new(),
        models: env("CLIP_MODELS_DIR").map_or_else(|| PathBuf::from("models"), PathBuf::from),
        endpoint: env("HF_ENDPOINT").unwrap_or_else(|| hub::DEFAULT_ENDPOINT.to_owned()),
        revision: "main".to_owned(),
        from: None,
        force: false,
        quiet: false,
    };
    let mut args = args.peekable();
    let mut models = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--models" => options.models = PathBuf::from(value("--models")?),
            "--endpoint" => options.endpoint = value("--endpoint")?,
            "--revision" => options.revision = value("--revision")?,
            "--from" => options.from = Some(PathBuf::from(value("--from")?)),
            "--force" => options.force = true,
            "--quiet" => options.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            model => models.push(model.to_owned()),
        }
    }
    match models.as_slice() {
        [model] => options.model = model.clone(),
        _ => return Err("give one MODEL".into()),
    }
    options.endpoint = options.endpoint.trim_end_matches('/').to_owned();
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("clip-fetch: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match install::run(&options) {
        Ok(dir) => {
            println!("{}", dir.display());
            eprintln!(
                "clip-fetch: installed {}; a superuser loads it with: ALTER SYSTEM SET clip.model_dir = '{}'; SELECT pg_reload_conf();",
                options.model,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clip-fetch: {e}");
            ExitCode::FAILURE
        }
    }
}
