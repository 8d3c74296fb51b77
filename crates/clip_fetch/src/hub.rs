//! The Hugging Face hub's download protocol, as its Python client (huggingface_hub) speaks it:
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}`: the commit a branch or tag points at;
//! - `GET {endpoint}/api/models/{repo}/tree/{commit}?recursive=true`: the files, with sizes, git object ids and,
//!   for files kept in large-file storage, their sha256 (paginated by `Link: <...>; rel="next"`);
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{path}`: `X-Repo-Commit`, `ETag` or, for large files, a redirect with
//!   `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
//! - `GET` of the same address, following redirects, with `Range: bytes=N-` to resume.
//!
//! A 404 means "no such repository/revision/file" by its `X-Error-Code` header.
use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::http::Response;
use ureq::typestate::WithoutBody;
use ureq::Body;
use sha1::Sha1;
use sha2::Digest;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Transfers cut by the network are resumed this many times before giving up (a rerun resumes too).
const ATTEMPTS: usize = 4;

pub struct Hub {
    agent: ureq::Agent,
    endpoint: String,
    repo: String,
}

/// A file of a repository, as its listing gives it.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// What the content must hash to.
    pub hash: ContentHash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentHash {
    /// A large-file-storage file: the sha256 of its content.
    Sha256(String),
    /// A file kept in git: its blob's object id, sha1 of `blob <size>\0<content>`.
    GitBlob(String),
}

impl Hub {
    pub fn new(endpoint: &str, repo: &str) -> Hub {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A transfer that stalls fails, and is resumed, rather than waiting for ever.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("clip-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Hub { agent, endpoint: endpoint.to_owned(), repo: repo.to_owned() }
    }

    /// The commit that `revision` names.
    pub fn commit(&self, revision: &str) -> Result<String, String> {
        let url = format!("{}/api/models/{}/revision/{}", self.endpoint, self.repo, revision);
        let info = self.get_json(&url)?;
        let sha = info["sha"].as_str().unwrap_or_default();
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{url} gave no commit id"));
        }
        Ok(sha.to_owned())
    }

    /// Every file of the repository at `commit`.
    pub fn files(&self, commit: &str) -> Result<Vec<RemoteFile>, String> {
        let mut url = Some(format!("{}/api/models/{}/tree/{}?recursive=true", self.endpoint, self.repo, commit));
        let mut files = Vec::new();
        while let Some(page) = url.take() {
            let mut response = self.call(self.agent.get(&page))?;
            check_status(&response, &page, &self.repo)?;
            url = next_page(&response);
            let entries: Value = read_json(&mut response, &page)?;
            for entry in entries.as_array().ok_or(format!("{page}: not a list of files"))? {
                if entry["type"] != "file" {
                    continue;
                }
                let field = |key: &str| entry.get(key).cloned().ok_or(format!("{page}: an entry has no {key}"));
                let path = field("path")?.as_str().unwrap_or_default().to_owned();
                let size = field("size")?.as_u64().ok_or(format!("{page}: {path} has no size"))?;
                let hash = match entry["lfs"]["oid"].as_str() {
                    Some(sha256) => ContentHash::Sha256(sha256.to_ascii_lowercase()),
                    None => ContentHash::GitBlob(field("oid")?.as_str().unwrap_or_default().to_ascii_lowercase()),
                };
                files.push(RemoteFile { path, size, hash });
            }
        }
        Ok(files)
    }

    /// Checks a file's metadata (`HEAD`, redirects not followed) against the listing: the same commit, size and
    /// hash, as huggingface_hub reads them.
    pub fn check_metadata(&self, commit: &str, file: &RemoteFile) -> Result<(), String> {
        let url = self.file_url(commit, &file.path);
        let request = self.agent.head(&url).header("Accept-Encoding", "identity");
        let response = self.call(request.config().max_redirects(0).max_redirects_will_error(false).build())?;
        check_status(&response, &url, &self.repo)?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(unquote);
        if header("x-repo-commit").as_deref() != Some(commit) {
            return Err(format!("{url}: the hub answers for another commit ({:?})", header("x-repo-commit")));
        }
        let etag = header("x-linked-etag").or_else(|| header("etag")).unwrap_or_default().to_ascii_lowercase();
        let size = header("x-linked-size").or_else(|| header("content-length")).and_then(|s| s.parse::<u64>().ok());
        let expected = match &file.hash {
            ContentHash::Sha256(h) | ContentHash::GitBlob(h) => h,
        };
        if size != Some(file.size) || &etag != expected {
            return Err(format!(
                "{}: the hub's metadata disagree (size {size:?} and ETag {etag} against {} and {expected})",
                file.path, file.size
            ));
        }
        Ok(())
    }

    /// Downloads `file` into `target`, resuming from what `target` already holds, and checks its size and hash. A
    /// file whose content is wrong is removed, so that the next attempt starts afresh.
    pub fn download(&self, commit: &str, file: &RemoteFile, target: &Path, progress: &mut Progress) -> Result<(), String> {
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.transfer(commit, file, target, progress) {
                Ok(()) => return verify(file, target),
                Err(Transfer::Fatal(e)) => return Err(e),
                Err(Transfer::Cut(e)) => {
                    progress.note(&format!("{}: transfer cut ({e}); resuming ({attempt}/{ATTEMPTS})", file.path));
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                }
            }
        }
        Err(format!("{}: the transfer was cut {ATTEMPTS} times ({last_error}); run again to resume", file.path))
    }

    fn transfer(&self, commit: &str, file: &RemoteFile, target: &Path, progress: &mut Progress) -> Result<(), Transfer> {
        let write_error = |e: std::io::Error| Transfer::Fatal(format!("{}: {e}", target.display()));
        let mut out = OpenOptions::new().create(true).append(true).open(target).map_err(write_error)?;
        let mut have = out.metadata().map_err(write_error)?.len();
        if have > file.size {
            out.set_len(0).map_err(write_error)?;
            have = 0;
        }
        if have == file.size {
            return Ok(());
        }
        let url = self.file_url(commit, &file.path);
        let mut request = self.agent.get(&url).header("Accept-Encoding", "identity");
        if have > 0 {
            request = request.header("Range", &format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| Transfer::Cut(e.to_string()))?;
        match response.status().as_u16() {
            206 => {}
            // The server sent the whole file (no ranges): start again.
            200 => {
                out.set_len(0).map_err(write_error)?;
                out.seek(SeekFrom::Start(0)).map_err(write_error)?;
                have = 0;
            }
            416 => {
                out.set_len(0).map_err(write_error)?;
                return Err(Transfer::Cut("the server refused the range; starting again".into()));
            }
            _ => return check_status(&response, &url, &self.repo).map_err(Transfer::Fatal),
        }
        progress.start(&file.path, have, file.size);
        let mut body = response.into_body().into_reader();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    progress.end();
                    return Err(Transfer::Cut(e.to_string()));
                }
            };
            have += n as u64;
            if have > file.size {
                out.set_len(0).map_err(write_error)?;
                return Err(Transfer::Fatal(format!("{}: the server sent more than its {} bytes", file.path, file.size)));
            }
            out.write_all(&buffer[..n]).map_err(write_error)?;
            progress.advance(have);
        }
        progress.end();
        out.sync_all().map_err(write_error)?;
        if have < file.size {
            return Err(Transfer::Cut(format!("the body ended at {have} of {} bytes", file.size)));
        }
        Ok(())
    }

    fn file_url(&self, commit: &str, path: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, self.repo, commit, path)
    }

    fn get_json(&self, url: &str) -> Result<Value, String> {
        let mut response = self.call(self.agent.get(url))?;
        check_status(&response, url, &self.repo)?;
        read_json(&mut response, url)
    }

    fn call(&self, request: ureq::RequestBuilder<WithoutBody>) -> Result<Response<Body>, String> {
        request.call().map_err(|e| format!("{} does not answer: {e}", self.endpoint))
    }
}

enum Transfer {
    /// The connection failed or ended early: resume.
    Cut(String),
    /// Anything else: give up.
    Fatal(String),
}

/// Checks a download's size and hash; removes the file when they are wrong.
fn verify(file: &RemoteFile, target: &Path) -> Result<(), String> {
    let actual = match &file.hash {
        ContentHash::Sha256(_) => clip_core::immich::sha256_of_file(target)?,
        ContentHash::GitBlob(_) => {
            let bytes = std::fs::read(target).map_err(|e| format!("{}: {e}", target.display()))?;
            let mut hasher = Sha1::new();
            hasher.update(format!("blob {}\0", bytes.len()));
            hasher.update(&bytes);
            hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let (kind, expected) = match &file.hash {
        ContentHash::Sha256(h) => ("sha256", h),
        ContentHash::GitBlob(h) => ("git object id", h),
    };
    if &actual != expected {
        let _ = std::fs::remove_file(target);
        return Err(format!("{}: corrupted in transfer ({kind} {actual}, the hub says {expected}); removed", file.path));
    }
    Ok(())
}

fn check_status(response: &Response<Body>, url: &str, repo: &str) -> Result<(), String> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) || (status == 302 || status == 307) {
        return Ok(());
    }
    let code = response.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or_default();
    Err(match code {
        "RepoNotFound" => format!("there is no model repository {repo} (HTTP {status} from {url})"),
        "RevisionNotFound" => format!("{repo} has no such revision (HTTP {status} from {url})"),
        "EntryNotFound" => format!("{repo} has no such file (HTTP {status} from {url})"),
        "GatedRepo" => format!("{repo} is gated: it needs an account's token, which clip-fetch does not send"),
        _ => format!("HTTP {status} from {url}"),
    })
}

/// The next page of a paginated listing, from its `Link` header.
fn next_page(response: &Response<Body>) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_owned())
    })
}

fn read_json(response: &mut Response<Body>, url: &str) -> Result<Value, String> {
    let text = response.body_mut().read_to_string().map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
}

fn unquote(value: &str) -> String {
    value.trim_start_matches("W/").trim_matches('"').to_owned()
}

/// The progress of a transfer on standard error: a bar redrawn in place on a terminal, a line per file elsewhere.
pub struct Progress {
    enabled: bool,
    terminal: bool,
    file: String,
    size: u64,
    started: Option<(Instant, u64)>,
    drawn: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress { enabled: !quiet, terminal: std::io::stderr().is_terminal(), file: String::new(), size: 0, started: None, drawn: now }
    }

    pub fn note(&mut self, line: &str) {
        if self.enabled {
            eprintln!("clip-fetch: {line}");
        }
    }

    fn start(&mut self, file: &str, have: u64, size: u64) {
        (self.file, self.size, self.started) = (file.to_owned(), size, Some((Instant::now(), have)));
        if self.enabled && !self.terminal {
            let resumed = if have > 0 { format!(", resuming at {}", megabytes(have)) } else { String::new() };
            eprintln!("clip-fetch: {file}: {}{resumed}", megabytes(size));
        }
        self.advance(have);
    }

    fn advance(&mut self, have: u64) {
        if !(self.enabled && self.terminal) || (self.drawn.elapsed() < Duration::from_millis(100) && have < self.size) {
            return;
        }
        self.drawn = Instant::now();
        let (since, from) = self.started.unwrap_or((Instant::now(), 0));
        let rate = (have - from) as f64 / since.elapsed().as_secs_f64().max(1e-3);
        let fraction = have as f64 / self.size.max(1) as f64;
        let bar: String = (0..30).map(|i| if (i as f64) < fraction * 30.0 { '#' } else { '.' }).collect();
        eprint!("\r{:<28} [{bar}] {:>3.0}% {} of {}, {}/s   ", self.file, fraction * 100.0, megabytes(have), megabytes(self.size), megabytes(rate as u64));
    }

    fn end(&mut self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The repository a model name stands for: Immich's exports by their own name, any other by OWNER/NAME.
pub fn repository(model: &str) -> String {
    if model.contains('/') {
        model.to_owned()
    } else {
        format!("immich-app/{model}")
    }
}
