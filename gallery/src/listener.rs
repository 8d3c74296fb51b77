//! The server's listener, whose connections turn hyper's own answers into JSON errors.
//!
//! hyper answers a request it cannot parse before any handler runs, with an empty body: 414 when the request target
//! is over 65,534 bytes (a fixed limit of hyper's), 431 when the request line and headers overflow its read buffer
//! (about 400 KiB) or have more than 100 fields, 400 when they are malformed. It has no hook for those answers, so
//! a connection rewrites one as hyper writes it: an error status with an empty body can only be hyper's own, since
//! every error response of the router has a JSON body (see `api::json_errors`), and hyper closes the connection
//! after it. Only bytes that start a response are looked at: the connection follows each response it passes on by
//! its Content-Length, and stops looking on a connection where it cannot (a response without one).
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::error::ApiError;

/// How long a connection answered with such an error goes on reading what the client still sends: closing a
/// socket with unread data resets the connection, and the client may lose the answer before it reads it.
const LINGER: Duration = Duration::from_secs(2);

pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.0).await;
        (Connection { stream, error_answer: None, body_left: Some(0) }, address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

pub struct Connection {
    stream: TcpStream,
    error_answer: Option<ErrorAnswer>,
    /// Bytes of the response being passed on still to come: 0 when the next byte starts a response, None once a
    /// response's length is unknown.
    body_left: Option<u64>,
}

/// hyper's answer to a request it could not parse, rewritten as JSON.
enum ErrorAnswer {
    /// The bytes still to write.
    Writing(Vec<u8>),
    /// Written and the sending side shut: reading until the client closes its side, or until the deadline.
    Lingering(Pin<Box<Sleep>>),
}

/// The length of the response whose head starts `bytes`, head included, if it states one.
fn response_length(bytes: &[u8]) -> Option<u64> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(bytes).ok()? else { return None };
    let length = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    let body: u64 = std::str::from_utf8(length.value).ok()?.trim().parse().ok()?;
    Some(head as u64 + body)
}

/// The JSON answer in place of `head` when it is all of one response head with an error status and an empty body.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    if response.parse(head).ok()? != httparse::Status::Complete(head.len()) {
        return None;
    }
    let status = StatusCode::from_u16(response.code?).ok()?;
    let empty = response.headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-length") && h.value == b"0");
    if !empty || !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let message = match status {
        StatusCode::URI_TOO_LONG => "the URL is longer than the server accepts (65,534 bytes of path and query)",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request's headers are larger than the server accepts (about 400 KiB, at most 100 fields)"
        }
        _ => "the request is not valid HTTP/1.1",
    };
    let body = ApiError::of_status(status, message).body();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

impl Connection {
    /// Writes what is left of a rewritten answer.
    fn poll_write_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(ErrorAnswer::Writing(bytes)) = &mut self.error_answer {
            while !bytes.is_empty() {
                match ready!(Pin::new(&mut self.stream).poll_write(cx, bytes))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => {
                        bytes.drain(..n);
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.error_answer.is_none() && this.body_left == Some(0) {
            // hyper writes a response head whole, in one buffer (this type does not take vectored writes).
            if let Some(answer) = json_answer(buf) {
                this.error_answer = Some(ErrorAnswer::Writing(answer));
                return Poll::Ready(Ok(buf.len()));
            }
        }
        ready!(this.poll_write_answer(cx))?;
        let written = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))? as u64;
        this.body_left = match this.body_left {
            // A write that starts a response: its head is whole in `buf`, even when only part of it was written.
            Some(0) => response_length(buf).and_then(|length| length.checked_sub(written)),
            Some(left) => left.checked_sub(written),
            None => None,
        };
        Poll::Ready(Ok(written as usize))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_answer(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.error_answer {
                None => return Pin::new(&mut this.stream).poll_shutdown(cx),
                Some(ErrorAnswer::Writing(_)) => {
                    ready!(this.poll_write_answer(cx))?;
                    ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                    this.error_answer = Some(ErrorAnswer::Lingering(Box::pin(tokio::time::sleep(LINGER))));
                }
                Some(ErrorAnswer::Lingering(deadline)) => {
                    let mut scratch = [0u8; 8192];
                    while deadline.as_mut().poll(cx).is_pending() {
                        let mut unread = ReadBuf::new(&mut scratch);
                        match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut unread)) {
                            Ok(()) if !unread.filled().is_empty() => {}
                            _ => break, // the client closed its side, or the connection is gone
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{json_answer, response_length};

    #[test]
    fn only_empty_error_answers_are_rewritten() {
        let hypers = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_answer(hypers).expect("rewritten")).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("content-type: application/json") && head.contains("connection: close"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "headers_too_large");

        for kept in [
            &b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"\x89PNG\r\n\x1a\n",
        ] {
            assert!(json_answer(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }

    #[test]
    fn a_response_is_followed_by_its_length() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 1000\r\n\r\n";
        assert_eq!(response_length(head), Some(head.len() as u64 + 1000));
        // Without a length (chunked, or a head cut short) nothing after it is taken for the start of a response.
        assert_eq!(response_length(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"), None);
        assert_eq!(response_length(b"HTTP/1.1 200 OK\r\ncontent-le"), None);
    }
}
