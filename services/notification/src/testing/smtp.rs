//! A real SMTP server on loopback that records every message, for tests
//! that assert on the mail the notification service sends (this crate's and
//! the gateway's).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use quill_platform::testing::ephemeral_listener;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

const WAIT: Duration = Duration::from_secs(15);

/// One message an SMTP client handed over.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// A minimal SMTP server on loopback that accepts everything and records
/// it: enough of RFC 5321 for lettre (greeting, EHLO/HELO, MAIL, RCPT,
/// DATA with dot-unstuffing, RSET, NOOP, QUIT).
pub struct SmtpSink {
    pub addr: std::net::SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let (listener, addr) = ephemeral_listener().await;
        let mails = Arc::new(Mutex::new(Vec::new()));
        let accept_loop = tokio::spawn(accept(listener, Arc::clone(&mails)));
        Self {
            addr,
            mails,
            accept_loop,
        }
    }

    pub fn server(&self) -> crate::config::SmtpServer {
        crate::config::SmtpServer {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("mails").clone()
    }

    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|to| to == address))
            .collect()
    }

    /// Waits until `address` has received `n` mails, and returns them.
    pub async fn wait_for(&self, address: &str, n: usize) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mails = self.mails_to(address);
            if mails.len() >= n {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} mail(s) did not reach {address}: {mails:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept(listener: TcpListener, mails: Arc<Mutex<Vec<Mail>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let mails = Arc::clone(&mails);
        tokio::spawn(async move {
            let _ = session(stream, mails).await;
        });
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" => {
                from = address_in(&command);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(address_in(&command));
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let (subject, body) = parse_message(&data);
                mails.lock().expect("mails").push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    subject,
                    body,
                });
                b"250 OK queued\r\n"
            }
            "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

fn address_in(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

/// The subject and the decoded text body of an RFC 5322 message.
fn parse_message(data: &str) -> (String, String) {
    let data = data.replace("\r\n", "\n");
    let (headers, body) = data.split_once("\n\n").unwrap_or((&data, ""));
    // Unfold long headers (RFC 5322 2.2.3).
    let headers = headers.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        decode_quoted_printable(body)
    } else {
        body.to_owned()
    };
    (header("Subject"), body)
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
