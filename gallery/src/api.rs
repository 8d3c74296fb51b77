//! The HTTP surface: the page and the JSON API. Every embedding and every search is one SQL statement run by the
//! extension; this module only moves bytes and JSON.
//!
//!   GET    /                          the page; /?q=TEXT runs that text search when it loads
//!   GET    /favicon.ico               the page's icon (SVG)
//!   GET    /api/stats                 model (its weights, source, and a notice for random weights), counts, sizes,
//!                                     and each model's column of the images with how many it embeds
//!   POST   /api/images                multipart, one or more files: store and embed them (all or none)
//!   GET    /api/images                the stored images, newest first (?limit=&before=&offset=), a page at a time
//!   GET    /api/images/{id}           the image's bytes, with their content type
//!   DELETE /api/images/{id}
//!   GET    /api/images/{id}/similar   stored images nearest to a stored one (?k=)
//!   POST   /api/texts                 JSON {"texts": [...]}: store and embed them
//!   GET    /api/texts                 the stored texts, newest first (?limit=&before=&offset=)
//!   DELETE /api/texts/{id}
//!   GET    /api/search?q=...&k=       text to image; &model=NAME searches the images with a registered model
//!                                     whose embeddings of every image a column of gallery.images holds
//!   POST   /api/search/image?k=       multipart with one image: image to image
//!   POST   /api/rank-texts?k=         multipart with one image: stored texts ranked for it by cosine, or, with
//!                                     "labels" fields, those labels classified zero-shot (probabilities)
//!   POST   /api/similarity            multipart with "text" and one image: their cosine similarity
//! Errors are JSON (see error.rs); so are the router's own 404, 405 and 413 (see `json_errors`), and hyper's own
//! 400, 414 and 431 for requests it cannot parse (see listener.rs).
use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::{self, ModelInfo, NewImage, StoredImage};
use crate::error::{ApiError, ApiResult};

const PAGE: &str = include_str!("page.html");
/// Most results one search returns; hnsw.ef_search is set to this for each connection (see lib.rs).
pub const MAX_K: i64 = 100;
const DEFAULT_K: i64 = 12;
const MAX_QUERY_CHARS: usize = 2000;
const MAX_TEXTS: usize = 1000;
/// Rows of a list's page: the most, and when the request does not say.
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 100;
const FAVICON: &str = include_str!("favicon.svg");

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub model: Arc<ModelInfo>,
    pub max_body_bytes: usize,
}

pub fn router(state: AppState, log_requests: bool) -> Router {
    let limit = state.max_body_bytes;
    let mut app = Router::new()
        .route("/", get(page))
        .route("/favicon.ico", get(favicon))
        .route("/api/stats", get(stats))
        .route("/api/images", post(add_images).get(list_images))
        .route("/api/images/{id}", get(get_image).delete(delete_image))
        .route("/api/images/{id}/similar", get(similar_to_stored))
        .route("/api/texts", post(add_texts).get(list_texts))
        .route("/api/texts/{id}", axum::routing::delete(delete_text))
        .route("/api/search", get(search_text))
        .route("/api/search/image", post(search_image))
        .route("/api/rank-texts", post(rank_texts))
        .route("/api/similarity", post(similarity))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_response(json_errors));
    if log_requests {
        app = app.layer(middleware::from_fn(log_request));
    }
    app
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is inline or from this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], FAVICON)
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// The router's own error responses (unknown method, body over the limit, a malformed path or query) come as
/// plain text: turn every error response that is not JSON yet into the JSON error shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text =
        to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut out = ApiError::of_status(status, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    eprintln!("{method} {path} -> {} in {:.1} ms", response.status().as_u16(), started.elapsed().as_secs_f64() * 1e3);
    response
}

// ---------------------------------------------------------------------------------------------------------------
// Parameters

#[derive(Deserialize)]
struct KParam {
    k: Option<i64>,
}

fn k_of(k: Option<i64>) -> ApiResult<i64> {
    let k = k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request("invalid_k", format!("k must be between 1 and {MAX_K}, not {k}")));
    }
    Ok(k)
}

#[derive(Deserialize)]
struct PageParams {
    limit: Option<i64>,
    offset: Option<i64>,
    before: Option<i64>,
}

/// One page of a list, newest first: at most `limit` rows whose ids are below `before`, after skipping `offset`.
struct Page {
    limit: i64,
    offset: i64,
    before: i64,
}

fn page_of(p: &PageParams) -> ApiResult<Page> {
    let page = Page {
        limit: p.limit.unwrap_or(DEFAULT_PAGE),
        offset: p.offset.unwrap_or(0),
        before: p.before.unwrap_or(i64::MAX),
    };
    if !(1..=MAX_PAGE).contains(&page.limit) || page.offset < 0 || page.before < 1 {
        return Err(ApiError::bad_request(
            "invalid_page",
            format!("limit must be between 1 and {MAX_PAGE}, offset not negative and before above 0"),
        ));
    }
    Ok(page)
}

impl Page {
    /// Cuts `rows`, read with one row over the limit, to the page: the `before` of the next page, None on the last.
    fn next_before(&self, rows: &mut Vec<tokio_postgres::Row>) -> Option<i64> {
        if rows.len() as i64 <= self.limit {
            return None;
        }
        rows.truncate(self.limit as usize);
        rows.last().map(|r| r.get("id"))
    }
}

fn query_text(q: Option<&str>, what: &str) -> ApiResult<String> {
    let q = q.unwrap_or("").trim();
    if q.is_empty() {
        return Err(ApiError::bad_request("empty_query", format!("{what} is empty")));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "query_too_long",
            format!("{what} is longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(q.to_string())
}

/// A multipart form: its files (fields with a file name, or named image/images/file/files) and its text fields.
struct Form {
    files: Vec<NewImage>,
    fields: Vec<(String, String)>,
}

impl Form {
    async fn read(mut multipart: Multipart, limit: usize) -> ApiResult<Form> {
        let multipart_error = |e: MultipartError| multipart_error(e, limit);
        let mut form = Form { files: Vec::new(), fields: Vec::new() };
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let data: Bytes = field.bytes().await.map_err(multipart_error)?;
            if file_name.is_some() || matches!(name.as_str(), "image" | "images" | "file" | "files") {
                let n = form.files.len() + 1;
                let file_name = file_name.filter(|f| !f.trim().is_empty()).unwrap_or_else(|| format!("upload-{n}"));
                let file_name: String = file_name.chars().filter(|c| !c.is_control()).take(200).collect();
                form.files.push(NewImage { name: file_name, bytes: data.to_vec() });
            } else {
                let value = String::from_utf8(data.to_vec())
                    .map_err(|_| ApiError::bad_request("bad_field", format!("field {name:?} is not UTF-8 text")))?;
                form.fields.push((name, value));
            }
        }
        Ok(form)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn one_image(&mut self) -> ApiResult<NewImage> {
        match self.files.len() {
            1 => Ok(self.files.pop().expect("one file")),
            0 => Err(ApiError::bad_request("no_image", "the form has no image file (send it as the field \"image\")")),
            n => Err(ApiError::bad_request("too_many_images", format!("send one image, not {n}"))),
        }
    }
}

fn multipart_error(e: MultipartError, limit: usize) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the request is larger than the limit of {:.1} MiB", limit as f64 / (1 << 20) as f64),
        ),
        status => ApiError::new(status, "bad_multipart", e.body_text()),
    }
}

/// Embeds one uploaded image and returns its vector in pgvector's text form, to bind into a search: a bad image
/// is an error even when the table searched is empty.
async fn embed_image(client: &tokio_postgres::Client, image: &NewImage) -> ApiResult<String> {
    let row = client
        .query_one("SELECT clip_embed_image($1::bytea)::text", &[&image.bytes])
        .await
        .map_err(|e| ApiError::from_db(&e).with_file(Some(image.name.clone())))?;
    Ok(row.get(0))
}

fn image_results(rows: &[tokio_postgres::Row]) -> Vec<Value> {
    rows.iter()
        .map(|row| {
            let distance: f64 = row.get("distance");
            let mut v = serde_json::to_value(StoredImage::from_row(row)).expect("serialisable");
            v["score"] = json!(1.0 - distance);
            v
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers

async fn stats(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let client = state.pool.get().await?;
    let row = client
        .query_one(
            "SELECT clip_info()::text,
                    (SELECT count(*) FROM gallery.images),
                    (SELECT count(*) FROM gallery.texts),
                    (SELECT coalesce(sum(octet_length(image)), 0)::int8 FROM gallery.images),
                    pg_database_size(current_database()),
                    current_setting('server_version')",
            &[],
        )
        .await?;
    let info: Value = serde_json::from_str(row.get::<_, &str>(0)).unwrap_or(Value::Null);
    let models = db::model_columns(&**client).await?;
    Ok(Json(json!({
        "models": models,
        "model": info["model"],
        "weights": info["weights"],
        "source": info["source"],
        "notice": info["weights"].as_str().and_then(db::weights_notice),
        "embed_dim": info["embed_dim"],
        "context_length": info["context_length"],
        "image_size": info["image_size"],
        "onnxruntime_version": info["onnxruntime_version"],
        "extension_version": info["extension_version"],
        "images": row.get::<_, i64>(1),
        "texts": row.get::<_, i64>(2),
        "image_bytes": row.get::<_, i64>(3),
        "database_bytes": row.get::<_, i64>(4),
        "postgres_version": row.get::<_, &str>(5),
        "max_upload_bytes": state.max_body_bytes,
        "max_k": MAX_K,
    })))
}

async fn add_images(State(state): State<AppState>, multipart: Multipart) -> ApiResult<(StatusCode, Json<Value>)> {
    let form = Form::read(multipart, state.max_body_bytes).await?;
    if form.files.is_empty() {
        return Err(ApiError::bad_request("no_images", "the form has no image files (send them as fields \"images\")"));
    }
    let mut client = state.pool.get().await?;
    // One statement embeds the whole batch; the transaction makes "all or nothing" explicit.
    let tx = client.transaction().await?;
    let added = db::insert_images(&*tx, &form.files).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "added": added }))))
}

async fn list_images(State(state): State<AppState>, Query(p): Query<PageParams>) -> ApiResult<Json<Value>> {
    let page = page_of(&p)?;
    let client = state.pool.get().await?;
    let mut rows = client
        .query(
            "SELECT id, name, content_type, octet_length(image)::int8 AS bytes, added_at::text AS added_at
             FROM gallery.images WHERE id < $3 ORDER BY id DESC LIMIT $1::int8 + 1 OFFSET $2",
            &[&page.limit, &page.offset, &page.before],
        )
        .await?;
    let next_before = page.next_before(&mut rows);
    let total: i64 = client.query_one("SELECT count(*) FROM gallery.images", &[]).await?.get(0);
    let images: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(StoredImage::from_row(r)).expect("serialisable");
            v["added_at"] = json!(r.get::<_, &str>("added_at"));
            v
        })
        .collect();
    Ok(Json(json!({ "images": images, "total": total, "next_before": next_before })))
}

async fn get_image(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt("SELECT content_type, image FROM gallery.images WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no image {id}")))?;
    let content_type: &str = row.get(0);
    let bytes: Vec<u8> = row.get(1);
    let mut response = Body::from(bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

async fn delete_image(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    match client.execute("DELETE FROM gallery.images WHERE id = $1", &[&id]).await? {
        0 => Err(ApiError::not_found(format!("no image {id}"))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn similar_to_stored(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(p): Query<KParam>,
) -> ApiResult<Json<Value>> {
    let k = k_of(p.k)?;
    let client = state.pool.get().await?;
    let query: String = client
        .query_opt("SELECT embedding::text FROM gallery.images WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no image {id}")))?
        .get(0);
    let rows = client
        .query(
            "SELECT id, name, content_type, octet_length(image)::int8 AS bytes, embedding <=> $1::text::vector AS distance
             FROM gallery.images WHERE id <> $2 ORDER BY distance LIMIT $3",
            &[&query, &id, &k],
        )
        .await?;
    Ok(Json(json!({ "image": id, "results": image_results(&rows) })))
}

#[derive(Deserialize)]
struct AddTexts {
    texts: Option<Vec<String>>,
    text: Option<String>,
}

async fn add_texts(State(state): State<AppState>, Json(body): Json<AddTexts>) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut texts = body.texts.unwrap_or_default();
    texts.extend(body.text);
    if texts.is_empty() {
        return Err(ApiError::bad_request("no_texts", "send {\"texts\": [\"...\", ...]}"));
    }
    if texts.len() > MAX_TEXTS {
        return Err(ApiError::bad_request("too_many_texts", format!("at most {MAX_TEXTS} texts at once")));
    }
    let texts: Vec<String> = texts.iter().map(|t| query_text(Some(t), "a text")).collect::<ApiResult<_>>()?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "INSERT INTO gallery.texts (text, embedding)
             SELECT t, e FROM unnest($1::text[], clip_embed_texts($1::text[])) AS u(t, e)
             RETURNING id, text",
            &[&texts],
        )
        .await?;
    tx.commit().await?;
    let mut added: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    added.sort_by_key(|a| a.0);
    let added: Vec<Value> = added.into_iter().map(|(id, text)| json!({"id": id, "text": text})).collect();
    Ok((StatusCode::CREATED, Json(json!({ "added": added }))))
}

async fn list_texts(State(state): State<AppState>, Query(p): Query<PageParams>) -> ApiResult<Json<Value>> {
    let page = page_of(&p)?;
    let client = state.pool.get().await?;
    let mut rows = client
        .query(
            "SELECT id, text, added_at::text FROM gallery.texts
             WHERE id < $3 ORDER BY id DESC LIMIT $1::int8 + 1 OFFSET $2",
            &[&page.limit, &page.offset, &page.before],
        )
        .await?;
    let next_before = page.next_before(&mut rows);
    let total: i64 = client.query_one("SELECT count(*) FROM gallery.texts", &[]).await?.get(0);
    let texts: Vec<Value> = rows
        .iter()
        .map(|r| json!({"id": r.get::<_, i64>(0), "text": r.get::<_, &str>(1), "added_at": r.get::<_, &str>(2)}))
        .collect();
    Ok(Json(json!({ "texts": texts, "total": total, "next_before": next_before })))
}

async fn delete_text(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    match client.execute("DELETE FROM gallery.texts WHERE id = $1", &[&id]).await? {
        0 => Err(ApiError::not_found(format!("no text {id}"))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Deserialize)]
struct SearchParams {
    q: Option<String>,
    k: Option<i64>,
    model: Option<String>,
}

async fn search_text(State(state): State<AppState>, Query(p): Query<SearchParams>) -> ApiResult<Json<Value>> {
    let q = query_text(p.q.as_deref(), "the query q")?;
    let k = k_of(p.k)?;
    let client = state.pool.get().await?;
    if let Some(model) = p.model {
        return search_text_in(&client, &q, k, &model).await;
    }
    // The scalar subquery is an InitPlan: the text is embedded once, and the HNSW index serves the ORDER BY.
    let statement = client
        .prepare_cached(
            "SELECT id, name, content_type, octet_length(image)::int8 AS bytes,
                    embedding <=> (SELECT clip_embed_text($1::text)) AS distance
             FROM gallery.images ORDER BY distance LIMIT $2",
        )
        .await?;
    let rows = client.query(&statement, &[&q, &k]).await?;
    Ok(Json(json!({ "query": q, "results": image_results(&rows) })))
}

/// A text search with a registered model, in the column of gallery.images that holds its embeddings of every image.
async fn search_text_in(client: &deadpool_postgres::Client, q: &str, k: i64, model: &str) -> ApiResult<Json<Value>> {
    let columns = db::model_columns(&***client).await?;
    let Some(column) = columns.iter().find(|c| c.complete && c.model.as_deref() == Some(model)) else {
        let searchable: Vec<&str> = columns.iter().filter(|c| c.complete).filter_map(|c| c.model.as_deref()).collect();
        return Err(ApiError::bad_request(
            "model_not_searchable",
            format!(
                "no column of the gallery's images holds embeddings of every image by the model \"{model}\"; \
                 searchable models: {}",
                if searchable.is_empty() { "none by name".to_string() } else { searchable.join(", ") }
            ),
        ));
    };
    let statement = client
        .prepare_cached(&format!(
            "SELECT id, name, content_type, octet_length(image)::int8 AS bytes,
                    {} <=> (SELECT clip_embed_text($1::text, $3::text::name)) AS distance
             FROM gallery.images ORDER BY distance LIMIT $2",
            db::quote_ident(&column.column)
        ))
        .await?;
    let rows = client.query(&statement, &[&q, &k, &model]).await?;
    Ok(Json(json!({ "query": q, "model": model, "results": image_results(&rows) })))
}

async fn search_image(
    State(state): State<AppState>,
    Query(p): Query<KParam>,
    multipart: Multipart,
) -> ApiResult<Json<Value>> {
    let k = k_of(p.k)?;
    let image = Form::read(multipart, state.max_body_bytes).await?.one_image()?;
    let client = state.pool.get().await?;
    let query = embed_image(&client, &image).await?;
    let rows = client
        .query(
            "SELECT id, name, content_type, octet_length(image)::int8 AS bytes, embedding <=> $1::text::vector AS distance
             FROM gallery.images ORDER BY distance LIMIT $2",
            &[&query, &k],
        )
        .await?;
    Ok(Json(json!({ "query": image.name, "results": image_results(&rows) })))
}

async fn rank_texts(
    State(state): State<AppState>,
    Query(p): Query<KParam>,
    multipart: Multipart,
) -> ApiResult<Json<Value>> {
    let k = k_of(p.k)?;
    let mut form = Form::read(multipart, state.max_body_bytes).await?;
    let image = form.one_image()?;
    // Labels: repeated "labels" fields, each possibly several lines.
    let labels: Vec<String> = form
        .fields
        .iter()
        .filter(|(n, _)| n == "labels" || n == "label")
        .flat_map(|(_, v)| v.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let client = state.pool.get().await?;
    if labels.is_empty() {
        let query = embed_image(&client, &image).await?;
        let rows = client
            .query(
                "SELECT id, text, embedding <=> $1::text::vector AS distance FROM gallery.texts ORDER BY distance LIMIT $2",
                &[&query, &k],
            )
            .await?;
        let results: Vec<Value> = rows
            .iter()
            .map(|r| json!({"id": r.get::<_, i64>(0), "text": r.get::<_, &str>(1), "score": 1.0 - r.get::<_, f64>(2)}))
            .collect();
        return Ok(Json(json!({ "query": image.name, "score": "cosine", "results": results })));
    }
    if labels.len() > MAX_TEXTS {
        return Err(ApiError::bad_request("too_many_labels", format!("at most {MAX_TEXTS} labels")));
    }
    let template =
        form.field("template").map(str::trim).filter(|t| !t.is_empty()).unwrap_or("a photo of a {}").to_string();
    let rows = client
        .query(
            "SELECT label, probability::float8 FROM clip_classify($1::bytea, $2::text[], $3::text) LIMIT $4",
            &[&image.bytes, &labels, &template, &k],
        )
        .await
        .map_err(|e| ApiError::from_db(&e).with_file(Some(image.name.clone())))?;
    let results: Vec<Value> =
        rows.iter().map(|r| json!({"text": r.get::<_, &str>(0), "score": r.get::<_, f64>(1)})).collect();
    Ok(Json(json!({ "query": image.name, "score": "probability", "template": template, "results": results })))
}

async fn similarity(State(state): State<AppState>, multipart: Multipart) -> ApiResult<Json<Value>> {
    let mut form = Form::read(multipart, state.max_body_bytes).await?;
    let text = query_text(form.field("text"), "the field text")?;
    let image = form.one_image()?;
    let client = state.pool.get().await?;
    let row = client
        .query_one("SELECT clip_similarity($1::text, $2::bytea)", &[&text, &image.bytes])
        .await
        .map_err(|e| ApiError::from_db(&e).with_file(Some(image.name.clone())))?;
    Ok(Json(json!({ "text": text, "image": image.name, "score": row.get::<_, f64>(0) })))
}
