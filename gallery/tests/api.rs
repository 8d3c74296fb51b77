//! The gallery's endpoints against a real PostgreSQL with the extension and the tiny fixture model: each test
//! sets up a fresh database of the private 'gallery' cluster with `clip-gallery --setup` (as a superuser) and
//! starts the clip-gallery server on it, connected as the least-privileged role the set-up made.
//!
//! scripts/test_gallery.sh starts that cluster (port 55434, or $CLIP_GALLERY_PORT) with clip.model_dir set to
//! tests/fixtures/tiny-model, then runs these. CLIP_GALLERY_TEST_ADMIN overrides the connection string of the
//! superuser the tests create their databases and run the set-up as.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

// ---------------------------------------------------------------------------------------------------------------
// Harness

fn admin_conninfo(dbname: &str) -> String {
    if let Ok(c) = std::env::var("CLIP_GALLERY_TEST_ADMIN") {
        return format!("{c} dbname={dbname}");
    }
    let port = std::env::var("CLIP_GALLERY_PORT").unwrap_or_else(|_| "55434".into());
    format!("host=/tmp/clip_search-{port} port={port} user=postgres dbname={dbname}")
}

/// The role the set-up makes and the server connects as.
const ROLE: &str = "clip_gallery";

fn role_conninfo(dbname: &str) -> String {
    format!("{} user={ROLE}", admin_conninfo(dbname))
}

/// Runs `clip-gallery --setup` on the database as the superuser; its exit status and its stderr.
async fn set_up(dbname: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_clip-gallery"))
        .args(["--setup", "--database", &admin_conninfo(dbname)])
        .args(args)
        .output()
        .await
        .expect("the clip-gallery binary runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

async fn connect_as_role(dbname: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&role_conninfo(dbname), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn connect(dbname: &str) -> tokio_postgres::Client {
    let conninfo = admin_conninfo(dbname);
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to the 'gallery' cluster ({conninfo}): {e}; run scripts/test_gallery.sh, which starts it"
        )
    });
    tokio::spawn(connection);
    client
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images")
}

const CAT: &str = "chelsea_rgb_451x300.jpg";
const ROCKET: &str = "rocket_rgb_progressive_640x427.jpg";
const CAMERA: &str = "camera_l_128x128.gif";
const COFFEE: &str = "coffee_rgba_alpha_ramp_150x100.png";

struct Server {
    child: Child,
    base: String,
    dbname: String,
    http: reqwest::Client,
}

impl Server {
    /// A fresh database named after the test, set up, and the server on a free port.
    async fn start(test: &str, args: &[&str]) -> Server {
        let dbname = fresh_database(test).await;
        let (ok, err) = set_up(&dbname, &[]).await;
        assert!(ok, "clip-gallery --setup failed: {err}");
        Self::spawn(dbname, args).await
    }

    /// The server on an existing database, connected as the gallery's role.
    async fn spawn(dbname: String, args: &[&str]) -> Server {
        let conninfo = role_conninfo(&dbname);
        Self::launch(dbname, &conninfo, args).await.unwrap_or_else(|err| panic!("clip-gallery did not start: {err}"))
    }

    /// The server on `conninfo`; its stderr if it exits before it listens.
    async fn launch(dbname: String, conninfo: &str, args: &[&str]) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clip-gallery"))
            .args(["--listen", "127.0.0.1:0", "--database", conninfo, "--quiet", "--pool-size", "2"])
            .args(["--max-body-mb", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the clip-gallery binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(address) = line.strip_prefix("clip-gallery: listening on ") {
                    return Some(address.to_string());
                }
            }
            None
        })
        .await
        .unwrap_or(None);
        let Some(base) = listening else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
            return Err(err);
        };
        Ok(Server { child, base, dbname, http: reqwest::Client::new() })
    }

    async fn stop(mut self) -> String {
        self.child.kill().await.unwrap();
        std::mem::take(&mut self.dbname)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn db(&self) -> tokio_postgres::Client {
        connect(&self.dbname).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn post_form(&self, path: &str, form: Form) -> (StatusCode, Value) {
        json_of(self.http.post(self.url(path)).multipart(form).send().await.unwrap()).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        json_of(self.http.post(self.url(path)).json(&body).send().await.unwrap()).await
    }

    async fn add_images(&self, names: &[&str]) -> Vec<Value> {
        let (status, body) = self.post_form("/api/images", images_form("images", names)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["added"].as_array().unwrap().clone()
    }

    async fn image_count(&self) -> i64 {
        self.db().await.query_one("SELECT count(*) FROM gallery.images", &[]).await.unwrap().get(0)
    }
}

/// A new empty database named after the test, as scripts/gallery.sh makes it: no role may create in the schema
/// public (PostgreSQL's default from 15 on).
async fn fresh_database(test: &str) -> String {
    let dbname = format!("gallery_test_{test}");
    let admin = connect("postgres").await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.unwrap();
    connect(&dbname).await.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC").await.unwrap();
    dbname
}

/// The status and the JSON body; every response of the API, errors included, must be JSON.
async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    assert_eq!(content_type.as_deref(), Some("application/json"), "status {status}, body {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

fn file_part(name: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

fn images_form(field: &str, names: &[&str]) -> Form {
    names.iter().fold(Form::new(), |form, name| form.part(field.to_string(), file_part(name, fixture(name))))
}

/// A JSON error: a 4xx status, a message and a code.
fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message: {body}");
    assert_eq!(body["code"], code, "{body}");
}

/// The ids of a list's items.
fn ids(items: &Value) -> Vec<i64> {
    items.as_array().unwrap().iter().map(|i| i["id"].as_i64().expect("every item has an id")).collect()
}

/// Sends `request` as it is on a new connection and reads the answer until the server closes it: the status, the
/// response head, and the body, which must be JSON.
async fn raw_exchange(server: &Server, request: &[u8]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(server.base.strip_prefix("http://").unwrap()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete answer: {answer:?}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    (status, head.to_ascii_lowercase(), body)
}

fn scores(results: &Value) -> Vec<f64> {
    results.as_array().unwrap().iter().map(|r| r["score"].as_f64().expect("every result has a score")).collect()
}

fn assert_descending(scores: &[f64]) {
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "not in descending order: {scores:?}");
    assert!(scores.iter().all(|s| (-1.0001..=1.0001).contains(s)), "a cosine outside [-1, 1]: {scores:?}");
}

/// A PNG whose header declares `width` x `height` pixels (and no pixel data).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IEND", &[]);
    png
}

// ---------------------------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn page_and_stats_of_an_empty_gallery() {
    let server = Server::start("page", &[]).await;
    let response = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    for id in [
        "id=\"q\"",
        "id=\"search-results\"",
        "id=\"similar-file\"",
        "id=\"add-files\"",
        "id=\"add-progress\"",
        "id=\"stats-table\"",
        "id=\"search-notice\"",
        "id=\"similar-notice\"",
        "id=\"browse-grid\"",
        "id=\"browse-older\"",
    ] {
        assert!(page.contains(id), "the page has no {id}");
    }
    // Self-contained: no scripts, styles or images from elsewhere.
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(external), "the page loads something from outside: {external}");
    }

    // The icon browsers ask for, as SVG.
    let response = server.http.get(server.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    assert!(response.text().await.unwrap().starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));

    let (status, stats) = server.get("/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["model"], "clip-tiny");
    assert_eq!(stats["embed_dim"], 32);
    assert_eq!(stats["images"], 0);
    assert_eq!(stats["texts"], 0);
    assert_eq!(stats["image_bytes"], 0);
    assert_eq!(stats["max_upload_bytes"], 1 << 20);
    // The fixture model was exported here, with random weights: no source, and the notice that says so.
    assert_eq!(stats["weights"], "random weights, seed 0");
    assert_eq!(stats["source"], Value::Null);
    let notice = stats["notice"].as_str().unwrap_or_else(|| panic!("no notice for random weights: {stats}"));
    assert!(notice.contains("random weights") && notice.contains("clip-fetch"), "notice: {notice}");
    // The tables were made with the model's dimension.
    let types: Vec<String> = server
        .db()
        .await
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid IN ('gallery.images'::regclass, 'gallery.texts'::regclass) AND attname = 'embedding'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["vector(32)", "vector(32)"]);

    // Searching an empty gallery is not an error.
    let (status, body) = server.get("/api/search?q=a%20cat").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"], json!([]));
}

#[tokio::test]
async fn add_list_serve_and_delete_images() {
    let server = Server::start("images", &[]).await;
    let added = server.add_images(&[CAT, COFFEE, CAMERA]).await;
    assert_eq!(added.len(), 3);
    let names: Vec<&str> = added.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, [CAT, COFFEE, CAMERA], "results come in upload order");
    let types: Vec<&str> = added.iter().map(|a| a["content_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["image/jpeg", "image/png", "image/gif"]);

    // The thumbnail endpoint serves the stored bytes from PostgreSQL with their content type.
    for (image, name) in added.iter().zip([CAT, COFFEE, CAMERA]) {
        assert_eq!(image["bytes"], fixture(name).len());
        let response = server.http.get(server.url(image["url"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], image["content_type"].as_str().unwrap());
        assert_eq!(response.bytes().await.unwrap().as_ref(), fixture(name).as_slice());
    }

    // The stored embeddings are the extension's.
    let same: bool = server
        .db()
        .await
        .query_one("SELECT bool_and(embedding = clip_embed_image(image)) FROM gallery.images", &[])
        .await
        .unwrap()
        .get(0);
    assert!(same);

    let (status, list) = server.get("/api/images?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 3);
    let listed: Vec<i64> = list["images"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, [added[2]["id"].as_i64().unwrap(), added[1]["id"].as_i64().unwrap()], "newest first");

    let (_, stats) = server.get("/api/stats").await;
    assert_eq!(stats["images"], 3);
    let total: usize = [CAT, COFFEE, CAMERA].iter().map(|n| fixture(n).len()).sum();
    assert_eq!(stats["image_bytes"], total);

    let id = added[1]["id"].as_i64().unwrap();
    let response = server.http.delete(server.url(&format!("/api/images/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = server.get(&format!("/api/images/{id}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) =
        json_of(server.http.delete(server.url(&format!("/api/images/{id}"))).send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(server.image_count().await, 2);
}

#[tokio::test]
async fn lists_come_a_page_at_a_time() {
    let server = Server::start("paging", &[]).await;
    let added = server.add_images(&[CAT, ROCKET, CAMERA, COFFEE, CAT]).await;
    let newest_first: Vec<i64> = ids(&json!(added)).into_iter().rev().collect();

    // Following next_before walks every image once, newest first, and the last page has none.
    let (mut seen, mut path): (Vec<i64>, _) = (Vec::new(), "/api/images?limit=2".to_string());
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 5);
        let page_ids = ids(&page["images"]);
        assert!(!page_ids.is_empty() && page_ids.len() <= 2, "{page}");
        seen.extend(&page_ids);
        let Some(before) = page["next_before"].as_i64() else { break };
        assert_eq!(Some(&before), page_ids.last(), "the next page starts below this one's last image");
        path = format!("/api/images?limit=2&before={before}");
    }
    assert_eq!(seen, newest_first);
    let (_, page) = server.get("/api/images?limit=5").await;
    assert_eq!((ids(&page["images"]), &page["next_before"]), (newest_first.clone(), &Value::Null), "all on one page");
    let (_, page) = server.get("/api/images?limit=4").await;
    assert_eq!(page["next_before"], newest_first[3]);

    // A cursor stays where it was when images are added or deleted above it; an offset counts from the newest.
    let new = server.add_images(&[ROCKET]).await[0]["id"].as_i64().unwrap();
    let response = server.http.delete(server.url(&format!("/api/images/{}", newest_first[0]))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, page) = server.get(&format!("/api/images?limit=2&before={}", newest_first[1])).await;
    assert_eq!(ids(&page["images"]), newest_first[2..4]);
    let (_, page) = server.get("/api/images?limit=2&offset=1").await;
    assert_eq!(ids(&page["images"]), newest_first[1..3]);
    let (_, page) = server.get("/api/images?limit=1").await;
    assert_eq!(ids(&page["images"]), [new]);
    let (_, page) = server.get(&format!("/api/images?before={}&offset=1", newest_first[1])).await;
    assert_eq!(ids(&page["images"]), newest_first[3..]);
    assert_eq!(page["next_before"], Value::Null);
    let (_, page) = server.get(&format!("/api/images?before={}", newest_first[4])).await;
    assert_eq!((&page["images"], &page["next_before"], &page["total"]), (&json!([]), &Value::Null, &json!(5)));

    // Texts page the same way.
    server.post_json("/api/texts", json!({ "texts": ["one", "two", "three"] })).await;
    let (_, page) = server.get("/api/texts?limit=2").await;
    let texts: Vec<&str> = page["texts"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["three", "two"]);
    let (_, page) = server.get(&format!("/api/texts?limit=2&before={}", page["next_before"])).await;
    assert_eq!((page["texts"][0]["text"].as_str(), &page["next_before"]), (Some("one"), &Value::Null));
}

#[tokio::test]
async fn text_search_ranks_by_cosine_with_scores() {
    let server = Server::start("search", &[]).await;
    server.add_images(&[CAT, ROCKET, CAMERA, COFFEE]).await;

    let (status, body) = server.get("/api/search?q=a%20photo%20of%20a%20cat&k=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["query"], "a photo of a cat");
    let results = &body["results"];
    assert_eq!(results.as_array().unwrap().len(), 3);
    let got = scores(results);
    assert_descending(&got);

    // Every score is the cosine of the text's and the image's embeddings, as SQL computes it.
    let db = server.db().await;
    for result in results.as_array().unwrap() {
        let expected: f64 = db
            .query_one(
                "SELECT 1 - (embedding <=> clip_embed_text('a photo of a cat')) FROM gallery.images WHERE id = $1",
                &[&result["id"].as_i64().unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        assert!((result["score"].as_f64().unwrap() - expected).abs() < 1e-6, "{result} vs {expected}");
        assert!(result["url"].as_str().unwrap().starts_with("/api/images/"));
    }
    // The whole ranking is SQL's.
    let order: Vec<i64> = db
        .query("SELECT id FROM gallery.images ORDER BY embedding <=> clip_embed_text('a photo of a cat')", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (_, all) = server.get("/api/search?q=a%20photo%20of%20a%20cat&k=100").await;
    let ids: Vec<i64> = all["results"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, order);

    // The same search through the similarity endpoint gives the same score.
    let top = &results[0];
    let form = Form::new()
        .text("text", "a photo of a cat")
        .part("image", file_part(top["name"].as_str().unwrap(), fixture(top["name"].as_str().unwrap())));
    let (status, sim) = server.post_form("/api/similarity", form).await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert!((sim["score"].as_f64().unwrap() - top["score"].as_f64().unwrap()).abs() < 1e-5, "{sim} vs {top}");

    // A few at once: the pool serves them all.
    let searches = ["a cat", "a rocket", "a camera", "a cup of coffee", "the moon", "a horse", "grass", "coins"]
        .map(|q| server.get_owned(format!("/api/search?q={}&k=2", q.replace(' ', "%20"))));
    for (status, body) in futures_join(searches).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn search_in_each_registered_model_whose_embeddings_are_complete() {
    let server = Server::start("models", &[]).await;
    server.add_images(&[CAT, ROCKET, CAMERA]).await;
    // A database owner keeps a second model's embeddings in a column of their own, filled by a watch.
    let siglip2 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/families/siglip2");
    let db = server.db().await;
    db.batch_execute(&format!(
        "SET client_min_messages = error;
         SELECT clip_register_model('siglip2', '{}');
         ALTER TABLE gallery.images ADD COLUMN embedding_siglip2 vector(32);
         SELECT clip_watch('gallery.images', 'image', 'embedding_siglip2', model => 'siglip2');",
        siglip2.display()
    ))
    .await
    .unwrap();
    let models = |stats: &Value| -> Vec<(Value, Value, Value, Value)> {
        stats["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["model"].clone(), m["column"].clone(), m["images_embedded"].clone(), m["complete"].clone()))
            .collect()
    };
    let (status, stats) = server.get("/api/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        models(&stats),
        [
            (Value::Null, json!("embedding"), json!(3), json!(true)),
            (json!("siglip2"), json!("embedding_siglip2"), json!(0), json!(false))
        ]
    );
    let (status, body) = server.get("/api/search?q=a%20cat&model=siglip2").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "model_not_searchable");

    // One batch of the watch, as the background worker runs it (this cluster runs no worker).
    db.batch_execute(
        "SELECT b.* FROM clip_search_internal.watches w
         CROSS JOIN LATERAL clip_search_internal.watch_batch(w.relation, w.source_attnum, w.target_attnum, 100) b",
    )
    .await
    .unwrap();
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!(models(&stats)[1], (json!("siglip2"), json!("embedding_siglip2"), json!(3), json!(true)));
    let (status, body) = server.get("/api/search?q=a%20cat&model=siglip2&k=10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "siglip2");
    let expected: Vec<(i64, f64)> = db
        .query(
            "SELECT id, 1 - (embedding_siglip2 <=> clip_embed_text('a cat', model => 'siglip2')) FROM gallery.images
             ORDER BY 2 DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: Vec<(i64, f64)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), expected.len());
    for ((id, score), (expected_id, expected_score)) in got.iter().zip(&expected) {
        assert_eq!(id, expected_id, "{got:?} vs {expected:?}");
        assert!((score - expected_score).abs() < 1e-6, "{got:?} vs {expected:?}");
    }

    // A model no column holds, and one whose column misses a new image, are refused.
    let (status, body) = server.get("/api/search?q=a%20cat&model=nonesuch").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "model_not_searchable");
    server.add_images(&[COFFEE]).await;
    let (status, body) = server.get("/api/search?q=a%20cat&model=siglip2").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "model_not_searchable");
    assert!(body["error"].as_str().unwrap().contains("\"siglip2\""), "{body}");
}

#[tokio::test]
async fn image_search_and_similar_images() {
    let server = Server::start("similar", &[]).await;
    let added = server.add_images(&[CAT, ROCKET, CAMERA, COFFEE]).await;
    let rocket_id = added[1]["id"].as_i64().unwrap();

    let (status, body) = server.post_form("/api/search/image?k=4", images_form("image", &[ROCKET])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = &body["results"];
    assert_eq!(results.as_array().unwrap().len(), 4);
    assert_descending(&scores(results));
    assert_eq!(results[0]["id"], rocket_id, "the uploaded image itself is nearest");
    assert!(results[0]["score"].as_f64().unwrap() > 0.9999);

    let (status, body) = server.get(&format!("/api/images/{rocket_id}/similar?k=10")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<i64> = body["results"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&rocket_id), "the image itself is left out");
    assert_descending(&scores(&body["results"]));
    let upload_order: Vec<i64> = results.as_array().unwrap()[1..].iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, upload_order, "the stored image ranks the others as its upload does");

    let (status, body) = server.get("/api/images/999999/similar").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn texts_ranking_classification_and_similarity() {
    let server = Server::start("texts", &[]).await;
    // Ranking with no texts stored still checks the image.
    let (status, body) = server.post_form("/api/rank-texts", images_form("image", &[CAT])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([]));

    let texts = ["a photo of a cat", "a rocket on the launch pad", "a cup of coffee", "a cameraman"];
    let (status, body) = server.post_json("/api/texts", json!({ "texts": texts })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let added: Vec<&str> = body["added"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(added, texts);
    let (status, body) = server.post_json("/api/texts", json!({ "text": "one more" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let one_more = body["added"][0]["id"].as_i64().unwrap();

    let (status, list) = server.get("/api/texts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 5);
    assert_eq!(list["texts"][0]["text"], "one more");
    let response = server.http.delete(server.url(&format!("/api/texts/{one_more}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) =
        json_of(server.http.delete(server.url(&format!("/api/texts/{one_more}"))).send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Stored texts ranked by cosine, as SQL ranks them.
    let (status, body) = server.post_form("/api/rank-texts?k=3", images_form("image", &[COFFEE])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["score"], "cosine");
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert_descending(&scores(&body["results"]));
    let db = server.db().await;
    let expected: Vec<String> = db
        .query(
            "SELECT text FROM gallery.texts ORDER BY embedding <=> clip_embed_image($1::bytea) LIMIT 3",
            &[&fixture(COFFEE)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let got: Vec<&str> = body["results"].as_array().unwrap().iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(got, expected);

    // Labels: zero-shot classification, probabilities that sum to 1.
    let form = images_form("image", &[CAT]).text("labels", "cat\ndog").text("labels", "rocket");
    let (status, body) = server.post_form("/api/rank-texts", form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["score"], "probability");
    let probabilities = scores(&body["results"]);
    assert_eq!(probabilities.len(), 3);
    assert_descending(&probabilities);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{probabilities:?}");
    let form = images_form("image", &[CAT]).text("labels", "cat").text("template", "no placeholder");
    let (status, body) = server.post_form("/api/rank-texts", form).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(body.get("file").is_none(), "the image is not at fault: {body}");

    // Similarity of a text and an image: the extension's clip_similarity.
    let form = Form::new().text("text", "a cup of coffee").part("image", file_part(COFFEE, fixture(COFFEE)));
    let (status, body) = server.post_form("/api/similarity", form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: f64 = db
        .query_one("SELECT clip_similarity('a cup of coffee'::text, $1::bytea)", &[&fixture(COFFEE)])
        .await
        .unwrap()
        .get(0);
    assert!((body["score"].as_f64().unwrap() - expected).abs() < 1e-12, "{body} vs {expected}");
    assert_eq!(body["text"], "a cup of coffee");
    assert_eq!(body["image"], COFFEE);
}

#[tokio::test]
async fn rejected_uploads_store_nothing() {
    let server = Server::start("rejected", &[]).await;
    let (_, before) = server.get("/api/stats").await;

    // One bad file in a batch rejects the batch, and the error names it: the server reads the failing element's
    // index from the error's DETAIL, which clip_embed_images gives as `element N`.
    let form = images_form("images", &[CAT])
        .part("images", file_part("notes.txt", b"just some text".to_vec()))
        .part("images", file_part(COFFEE, fixture(COFFEE)));
    let (status, body) = server.post_form("/api/images", form).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "not_an_image");
    assert_eq!(body["file"], "notes.txt");
    assert_eq!(server.image_count().await, 0, "nothing of a rejected batch is stored");
    let err = server
        .db()
        .await
        .query_one("SELECT clip_embed_images(ARRAY[$1::bytea, 'just some text'::bytea, $1::bytea])", &[&fixture(CAT)])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().and_then(|e| e.detail()), Some("element 2"), "{err:?}");

    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty.png", Vec::new(), StatusCode::UNPROCESSABLE_ENTITY, "not_an_image"),
        ("truncated.jpg", fixture(CAT)[..2000].to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "not_an_image"),
        (
            "drawing.svg",
            br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#
                .to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image_format",
        ),
        // Over clip.max_image_pixels (50 MP by default): refused from the header, before any decoding.
        ("bomb.png", png_header_only(100_000, 100_000), StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
    ];
    for (name, bytes, expected, code) in &cases {
        for path in ["/api/images", "/api/search/image", "/api/rank-texts"] {
            let form = Form::new().part("image", file_part(name, bytes.clone()));
            let (status, body) = server.post_form(path, form).await;
            assert_error(status, &body, *expected, code);
            assert_eq!(body["file"], *name, "{path}: {body}");
        }
        let form = Form::new().text("text", "a cat").part("image", file_part(name, bytes.clone()));
        let (status, body) = server.post_form("/api/similarity", form).await;
        assert_error(status, &body, *expected, code);
    }

    // A body over the server's limit (1 MiB here).
    let big: Vec<u8> = fixture(CAT).into_iter().cycle().take(1_500_000).collect();
    let form = images_form("images", &[CAT]).part("images", file_part("big.jpg", big));
    let (status, body) = server.post_form("/api/images", form).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    let (status, body) = server.post_json("/api/texts", json!({ "texts": vec!["a long text"; 200_000] })).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");

    assert_eq!(server.image_count().await, 0);
    let (_, after) = server.get("/api/stats").await;
    assert_eq!(after["images"], before["images"]);
    assert_eq!(after["texts"], before["texts"]);
    assert_eq!(after["image_bytes"], 0);

    // And the server is still fine.
    server.add_images(&[CAT]).await;
    assert_eq!(server.image_count().await, 1);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let server = Server::start("bad", &[]).await;
    server.add_images(&[CAT]).await;
    let long = "a".repeat(2001);
    let gets: Vec<(String, StatusCode, &str)> = vec![
        ("/api/search".into(), StatusCode::BAD_REQUEST, "empty_query"),
        ("/api/search?q=".into(), StatusCode::BAD_REQUEST, "empty_query"),
        ("/api/search?q=%20%20%0A".into(), StatusCode::BAD_REQUEST, "empty_query"),
        (format!("/api/search?q={long}"), StatusCode::BAD_REQUEST, "query_too_long"),
        ("/api/search?q=cat&k=0".into(), StatusCode::BAD_REQUEST, "invalid_k"),
        ("/api/search?q=cat&k=101".into(), StatusCode::BAD_REQUEST, "invalid_k"),
        ("/api/search?q=cat&k=many".into(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/images?limit=0".into(), StatusCode::BAD_REQUEST, "invalid_page"),
        ("/api/images?limit=1001".into(), StatusCode::BAD_REQUEST, "invalid_page"),
        ("/api/images?offset=-1".into(), StatusCode::BAD_REQUEST, "invalid_page"),
        ("/api/images?before=0".into(), StatusCode::BAD_REQUEST, "invalid_page"),
        ("/api/texts?limit=0".into(), StatusCode::BAD_REQUEST, "invalid_page"),
        ("/api/images?before=latest".into(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/images/abc".into(), StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/images/424242".into(), StatusCode::NOT_FOUND, "not_found"),
        ("/api/nope".into(), StatusCode::NOT_FOUND, "not_found"),
        ("/api/similarity".into(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (path, expected, code) in &gets {
        let (status, body) = server.get(path).await;
        assert_error(status, &body, *expected, code);
    }
    let (status, body) = json_of(server.http.put(server.url("/api/search?q=cat")).send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // JSON bodies
    let bad_json =
        server.http.post(server.url("/api/texts")).header("content-type", "application/json").body("{\"texts\": [");
    let (status, body) = json_of(bad_json.send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = json_of(server.http.post(server.url("/api/texts")).body("texts").send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let (status, body) = server.post_json("/api/texts", json!({ "texts": [] })).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no_texts");
    let (status, body) = server.post_json("/api/texts", json!({ "texts": ["fine", "  "] })).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty_query");
    let (status, body) = server.post_json("/api/texts", json!({ "texts": "not a list" })).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "bad_request");

    // Forms
    let not_multipart = server.http.post(server.url("/api/images")).header("content-type", "text/plain").body("hello");
    let (status, body) = json_of(not_multipart.send().await.unwrap()).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, body) = server.post_form("/api/images", Form::new().text("note", "no files")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no_images");
    let (status, body) = server.post_form("/api/search/image", Form::new()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_multipart");
    let (status, body) = server.post_form("/api/search/image", Form::new().text("note", "no image")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no_image");
    let (status, body) = server.post_form("/api/search/image", images_form("image", &[CAT, COFFEE])).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "too_many_images");
    let (status, body) = server.post_form("/api/search/image?k=0", images_form("image", &[CAT])).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_k");
    let (status, body) = server.post_form("/api/similarity", images_form("image", &[CAT])).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty_query");
    let (status, body) = server.post_form("/api/similarity", Form::new().text("text", "a cat")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no_image");

    assert_eq!(server.image_count().await, 1, "no bad request stored anything");
}

/// What hyper answers itself, before any handler runs (a URL or headers over its limits, a request that is not
/// HTTP), is JSON too, as are the router's 404 and 405; and the server goes on serving.
#[tokio::test]
async fn errors_of_the_http_layer_are_json() {
    let server = Server::start("http_layer", &[]).await;
    let long_url = format!("GET /api/search?q={} HTTP/1.1\r\nhost: gallery\r\n\r\n", "a".repeat(100_000));
    let big_header = format!("GET /api/stats HTTP/1.1\r\nhost: gallery\r\nx-big: {}\r\n\r\n", "b".repeat(1 << 20));
    let many_headers: String = (0..101).map(|i| format!("x-{i}: {i}\r\n")).collect();
    let many_headers = format!("GET /api/stats HTTP/1.1\r\nhost: gallery\r\n{many_headers}\r\n");
    let cases = [
        ("a 100,000-character URL", long_url, 414, "uri_too_long"),
        ("a 1 MiB header", big_header, 431, "headers_too_large"),
        ("102 header fields", many_headers, 431, "headers_too_large"),
        ("a request that is not HTTP", "GARBAGE\r\n\r\n".to_string(), 400, "bad_request"),
        (
            "an unknown path",
            "GET /nope HTTP/1.1\r\nhost: gallery\r\nconnection: close\r\n\r\n".into(),
            404,
            "not_found",
        ),
        (
            "a method the path does not take",
            "DELETE /api/stats HTTP/1.1\r\nhost: gallery\r\nconnection: close\r\n\r\n".into(),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, request, expected, code) in cases {
        let (status, head, body) = raw_exchange(&server, request.as_bytes()).await;
        assert_eq!(status, expected, "{what}: {head}");
        assert!(head.contains("\r\ncontent-type: application/json"), "{what}: {head}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
    }
    let (status, body) = server.get("/api/stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn first_run_import_restart_and_model_change() {
    let dir = std::env::temp_dir().join(format!("clip-gallery-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [CAT, ROCKET] {
        std::fs::write(dir.join(name), fixture(name)).unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not an image: skipped by its name").unwrap();
    let import = dir.to_str().unwrap().to_string();

    let dbname = fresh_database("restart").await;
    let (ok, err) = set_up(&dbname, &["--import-dir", &import]).await;
    assert!(ok, "{err}");
    let server = Server::spawn(dbname, &[]).await;
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!(stats["images"], 2, "the first set-up imports the folder");
    let (_, list) = server.get("/api/images").await;
    let mut names: Vec<&str> = list["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, [CAT, ROCKET]);
    server.post_json("/api/texts", json!({ "texts": ["a cat", "a rocket"] })).await;
    let dbname = server.stop().await;

    // The model identity includes the tokenizer's checksum: another tokenizer means other vectors.
    let db = connect(&dbname).await;
    let row = db
        .query_one(
            "SELECT value, clip_info()->'files'->'tokenizer'->>'sha256' FROM gallery.meta WHERE key = 'model'",
            &[],
        )
        .await
        .unwrap();
    let (identity, tokenizer_sha256): (String, String) = (row.get(0), row.get(1));
    assert!(identity.starts_with("clip-tiny "), "{identity}");
    assert!(identity.ends_with(&format!(" {tokenizer_sha256}")), "{identity} lacks the tokenizer's {tokenizer_sha256}");

    // A set-up and a restart keep everything and do not import again.
    let (ok, err) = set_up(&dbname, &["--import-dir", &import]).await;
    assert!(ok, "{err}");
    let server = Server::spawn(dbname, &[]).await;
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!((stats["images"].as_i64(), stats["texts"].as_i64()), (Some(2), Some(2)));
    // Not even after the imported images were deleted.
    for image in server.get("/api/images").await.1["images"].as_array().unwrap() {
        server.http.delete(server.url(image["url"].as_str().unwrap())).send().await.unwrap();
    }
    server.add_images(&[CAMERA]).await;
    let dbname = server.stop().await;
    let (ok, err) = set_up(&dbname, &["--import-dir", &import]).await;
    assert!(ok, "{err}");
    assert_eq!(db.query_one("SELECT count(*) FROM gallery.images", &[]).await.unwrap().get::<_, i64>(0), 1);

    // Vectors of another model: the server refuses to start (it may not rewrite the tables); the set-up
    // re-embeds them.
    db.batch_execute(
        "UPDATE gallery.meta SET value = 'another model' WHERE key = 'model';
         UPDATE gallery.images SET embedding = array_fill(0.5, ARRAY[32])::real[]::vector;
         UPDATE gallery.texts SET embedding = array_fill(0.5, ARRAY[32])::real[]::vector;",
    )
    .await
    .unwrap();
    let refused = Server::launch(dbname.clone(), &role_conninfo(&dbname), &[]).await.err().expect("refused");
    assert!(refused.contains("another model") && refused.contains("--setup"), "{refused}");
    let (ok, err) = set_up(&dbname, &[]).await;
    assert!(ok, "{err}");
    assert!(err.contains("re-embedding"), "{err}");
    let server = Server::spawn(dbname, &[]).await;
    let (_, stats) = server.get("/api/stats").await;
    assert_eq!((stats["images"].as_i64(), stats["texts"].as_i64()), (Some(1), Some(2)));
    let row = db
        .query_one(
            "SELECT (SELECT bool_and(embedding = clip_embed_image(image)) FROM gallery.images),
                    (SELECT bool_and(embedding = clip_embed_text(text)) FROM gallery.texts),
                    (SELECT value FROM gallery.meta WHERE key = 'model')",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1), "re-embedded with the current model");
    assert_eq!(row.get::<_, String>(2), identity);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_server_has_only_the_privileges_its_tables_need() {
    let server = Server::start("privileges", &[]).await;
    server.add_images(&[CAT]).await;
    let db = server.db().await;
    // The server's connections are the role's, and the role is an ordinary one that owns nothing.
    let users: Vec<String> = db
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database()
             AND application_name = 'clip-gallery'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, [ROLE]);
    let row = db
        .query_one(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls OR rolreplication,
                    (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
             FROM pg_roles r WHERE rolname = $1",
            &[&ROLE],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "{ROLE} has a role attribute it does not need");
    assert_eq!(row.get::<_, i64>(1), 0, "{ROLE} owns objects");

    // What the API does works as the role; schema changes, updates and other tables do not.
    let role = connect_as_role(&server.dbname).await;
    role.batch_execute("SELECT count(*) FROM gallery.images; SELECT value FROM gallery.meta").await.unwrap();
    for statement in [
        "ALTER TABLE gallery.images ALTER COLUMN embedding TYPE vector(32)",
        "CREATE TABLE gallery.extra (id int)",
        "DROP TABLE gallery.texts",
        "TRUNCATE gallery.images",
        "UPDATE gallery.meta SET value = 'x'",
        "INSERT INTO gallery.meta VALUES ('x', 'y')",
        "UPDATE gallery.images SET name = 'x'",
        "CREATE TABLE public.extra (id int)",
        "ALTER EXTENSION clip_search UPDATE",
        "CREATE SCHEMA extra",
    ] {
        let err = role.batch_execute(statement).await.expect_err(statement);
        let code = err.code().cloned();
        assert_eq!(code, Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{statement}: {err:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_changes_no_schema_and_refuses_a_superuser() {
    // Without the set-up the server does not start, and creates nothing: not even the extension.
    let dbname = fresh_database("no_setup").await;
    let (ok, err) = set_up(&dbname, &["--role", "postgres"]).await;
    assert!(!ok && err.contains("superuser"), "the set-up makes no superuser the server's role: {err}");
    let (ok, err) = set_up(&dbname, &[]).await;
    assert!(ok, "{err}");
    let db = connect(&dbname).await;
    db.batch_execute("DROP SCHEMA gallery CASCADE; DROP EXTENSION clip_search").await.unwrap();
    let refused = Server::launch(dbname.clone(), &role_conninfo(&dbname), &[]).await.err().expect("refused");
    assert!(refused.contains("--setup"), "{refused}");
    let extensions: i64 =
        db.query_one("SELECT count(*) FROM pg_extension WHERE extname = 'clip_search'", &[]).await.unwrap().get(0);
    assert_eq!(extensions, 0, "the server created the extension");

    // A superuser's connection is refused, even on a database that is set up.
    let (ok, err) = set_up(&dbname, &[]).await;
    assert!(ok, "{err}");
    let refused = Server::launch(dbname.clone(), &admin_conninfo(&dbname), &[]).await.err().expect("refused");
    assert!(refused.contains("superuser"), "{refused}");
    Server::spawn(dbname, &[]).await.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------

impl Server {
    async fn get_owned(&self, path: String) -> (StatusCode, Value) {
        self.get(&path).await
    }
}

/// Runs futures concurrently on this task and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..futures.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

/// The set-up runs as a superuser in a database whose owner may create objects in public and set the database's
/// default search_path: with the objects of tests/hostile_schema/plant.sql planted there and public first in the
/// search_path, it runs none of them (each would mark a sequence and make its owner a superuser).
#[tokio::test]
async fn set_up_runs_nothing_the_database_owner_planted() {
    let dbname = fresh_database("planted").await;
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gallery_planter') THEN
                     CREATE ROLE gallery_planter;
                 END IF;
             END $$;
             ALTER DATABASE {dbname} OWNER TO gallery_planter;
             ALTER DATABASE {dbname} SET search_path = public, pg_catalog;"
        ))
        .await
        .unwrap();
    let owner = connect(&dbname).await;
    owner
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO gallery_planter; SET ROLE gallery_planter; {} RESET ROLE;",
            include_str!("../../tests/hostile_schema/plant.sql")
        ))
        .await
        .unwrap();
    let (ok, err) = set_up(&dbname, &[]).await;
    assert!(ok, "clip-gallery --setup failed: {err}");
    let row = owner
        .query_one(
            "SELECT (SELECT is_called FROM public.planted_calls),
                    (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'gallery_planter')",
            &[],
        )
        .await
        .unwrap();
    let (planted_ran, owner_became_superuser): (bool, bool) = (row.get(0), row.get(1));
    assert!(!planted_ran && !owner_became_superuser, "a planted object ran during the set-up: {err}");

    // A schema gallery that the owner made first, with a view in place of a table, is refused.
    let dbname_2 = fresh_database("planted_schema").await;
    admin.batch_execute(&format!("ALTER DATABASE {dbname_2} OWNER TO gallery_planter")).await.unwrap();
    let owner_2 = connect(&dbname_2).await;
    owner_2
        .batch_execute(
            "SET ROLE gallery_planter;
             CREATE SCHEMA gallery;
             CREATE VIEW gallery.meta AS SELECT 'model'::text AS key, current_user::text AS value;
             RESET ROLE;",
        )
        .await
        .unwrap();
    let (ok, err) = set_up(&dbname_2, &[]).await;
    assert!(!ok && err.contains("no superuser made (the schema itself)"), "{err}");
    drop(owner_2);
    admin.batch_execute(&format!("DROP DATABASE {dbname_2} WITH (FORCE)")).await.unwrap();
    drop(owner);
    admin.batch_execute(&format!("DROP DATABASE {dbname} WITH (FORCE)")).await.unwrap();
    admin.batch_execute("DROP ROLE gallery_planter").await.unwrap();
}
