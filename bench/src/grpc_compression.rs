//! Whether compressing gRPC messages between Quill's processes pays: for
//! list pages as content sends them to the gateway, the encoded size, what
//! gzip and zstd (the codecs tonic offers) make of it, the CPU both ends
//! spend per message, and the transfer time the smaller message saves on a
//! cluster link. Compression pays only where the transfer saved outweighs
//! the CPU spent.

use std::time::{Duration, Instant};

use prost::Message;
use prost_types::Timestamp;
use quill_proto::content::v1 as pb;

/// A few hundred common words: article text compresses as prose does, not
/// as repeated filler (which would flatter compression) or random bytes
/// (which would defeat it).
const WORDS: &str = "the of and to in is you that it he was for on are as with his they at be \
    this have from or one had by word but not what all were we when your can said there use an \
    each which she do how their if will up other about out many then them these so some her would \
    make like him into time has look two more write go see number no way could people my than first \
    water been call who oil its now find long down day did get come made may part over new sound \
    take only little work know place year live me back give most very after thing our just name good \
    sentence man think say great where help through much before line right too mean old any same tell \
    boy follow came want show also around form three small set put end does another well large must \
    big even such because turn here why ask went men read need land different home us move try kind \
    hand picture again change off play spell air away animal house point page letter mother answer \
    found study still learn should america world rust async tokio server client request stream";

struct Text {
    words: Vec<&'static str>,
    state: u64,
}

impl Text {
    fn new() -> Self {
        Self {
            words: WORDS.split_whitespace().collect(),
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// `n` words, chosen by a fixed xorshift so every run measures the same.
    fn words(&mut self, n: usize) -> String {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let index = usize::try_from(self.state % self.words.len() as u64).unwrap_or(0);
            out.push(self.words[index]);
        }
        out.join(" ")
    }
}

/// A page as content answers `ListArticles`: bodies included (the gateway
/// drops them for RealWorld's list), authors and tags repeating as they do.
fn page(articles: usize, body_words: usize) -> pb::ListArticlesResponse {
    let mut text = Text::new();
    let authors = ["jake", "jane", "ada", "linus", "grace"];
    let articles = (0..articles)
        .map(|i| {
            let title = text.words(6);
            pb::Article {
                id: uuid::Uuid::now_v7().to_string(),
                slug: format!("{}-{i}", title.replace(' ', "-")),
                title,
                description: text.words(25),
                body: text.words(body_words),
                tags: vec!["rust".into(), "grpc".into(), text.words(1)],
                created_at: Some(Timestamp {
                    seconds: 1_764_000_000 + i64::try_from(i).unwrap_or(0),
                    nanos: 0,
                }),
                updated_at: None,
                favorited: i % 3 == 0,
                favorites_count: u64::try_from(i).unwrap_or(0),
                author: Some(pb::Profile {
                    id: format!("0190c0de-0000-7000-8000-00000000000{}", i % authors.len()),
                    username: authors[i % authors.len()].into(),
                    bio: Some(text.words(12)),
                    image: Some(format!(
                        "https://cdn.example.com/{}.png",
                        authors[i % authors.len()]
                    )),
                    following: false,
                }),
            }
        })
        .collect();
    pb::ListArticlesResponse {
        articles,
        articles_count: 1_000,
        next_cursor: Some("eyJjcmVhdGVkIjoxNzY0MDAwMDAwfQ".into()),
    }
}

/// Mean time of `run` over enough repetitions to last about 200 ms.
fn mean_time(mut run: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(200) {
        run();
        n += 1;
    }
    start.elapsed() / n
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("our own gzip");
    out
}

/// Compresses or decompresses one message.
type Codec = fn(&[u8]) -> Vec<u8>;

fn zstd(bytes: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(bytes, level).expect("compressing in memory")
}

fn unzstd(bytes: &[u8]) -> Vec<u8> {
    zstd::decode_all(bytes).expect("our own zstd")
}

/// One printed line per page and codec.
pub fn report() -> Vec<String> {
    let mut lines = Vec::new();
    for (name, articles, body_words) in [
        ("20 articles, 300-word bodies", 20, 300),
        ("100 articles, 300-word bodies", 100, 300),
        ("100 articles, 2,000-word bodies", 100, 2_000),
    ] {
        let encoded = page(articles, body_words).encode_to_vec();
        let codecs: [(&str, Codec, Codec); 3] = [
            ("gzip 6 (tonic's default)", |b| gzip(b, 6), gunzip),
            ("zstd 3 (tonic's default)", |b| zstd(b, 3), unzstd),
            ("zstd 1", |b| zstd(b, 1), unzstd),
        ];
        for (codec, compress, decompress) in codecs {
            let compressed = compress(&encoded);
            let cpu = mean_time(|| drop(compress(&encoded)))
                + mean_time(|| drop(decompress(&compressed)));
            let saved = encoded.len() - compressed.len();
            // Bytes saved over a link of 10 Gbit/s and of 1 Gbit/s.
            let at = |gbit: f64| Duration::from_secs_f64(saved as f64 * 8.0 / (gbit * 1e9));
            lines.push(format!(
                "{name}: {} KiB -> {codec} {} KiB; CPU {:.0} us per message (both ends) against {:.0} us saved at 10 Gbit/s, {:.0} us at 1 Gbit/s",
                encoded.len() / 1024,
                compressed.len() / 1024,
                cpu.as_secs_f64() * 1e6,
                at(10.0).as_secs_f64() * 1e6,
                at(1.0).as_secs_f64() * 1e6,
            ));
        }
    }
    lines
}
