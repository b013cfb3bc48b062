//! Mail delivery. Handlers do not talk SMTP: they queue mail in
//! `outbox_mail` in the consumer's transaction, and this sender delivers it
//! after commit. Why: the consumer commits after the handler returns, so a
//! mail sent from the handler could go out for a transaction that then
//! rolls back (and again on each retry), and a slow or down SMTP server
//! would hold the transaction open and stall the queue. The table makes
//! delivery at-least-once and independent of SMTP outages: a mail is marked
//! sent only after the server accepted it, and retried with backoff until
//! `max_attempts`. Senders on several instances share the rows with
//! `FOR UPDATE SKIP LOCKED`.

use quill_platform::retry::Backoff;
use std::{sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    config::SmtpServer,
    repo::mail::{self as repo, PendingMail},
};

/// Mails claimed per transaction.
const BATCH: i64 = 20;
/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MailSender {
    pool: PgPool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    wakeup: Arc<Notify>,
    poll_interval: Duration,
    max_attempts: i32,
}

impl MailSender {
    pub fn new(
        pool: PgPool,
        smtp: &SmtpServer,
        from: Mailbox,
        wakeup: Arc<Notify>,
        poll_interval: Duration,
        max_attempts: i32,
    ) -> Self {
        // Plain SMTP without TLS: the relay is on loopback or the cluster
        // network (see the lettre features in Cargo.toml).
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Self {
            pool,
            transport,
            from,
            wakeup,
            poll_interval,
            max_attempts,
        }
    }

    /// Delivers queued mail until `shutdown`; a batch in flight finishes.
    pub async fn run(self, shutdown: quill_platform::shutdown::CancellationToken) {
        loop {
            let full = match self.send_batch().await {
                Ok(sent) => sent == BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "mail batch failed, will retry");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        tracing::info!("mail sender stopped");
    }

    /// Sends one batch; returns how many mails it handled.
    async fn send_batch(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mails = repo::claim_mail(&mut tx, BATCH).await?;
        for mail in &mails {
            match self.send(mail).await {
                Ok(()) => repo::mail_sent(&mut tx, mail.id).await?,
                Err(Failure::Permanent(e)) => {
                    tracing::error!(id = %mail.id, error = %e, "mail cannot be sent, giving up");
                    repo::mail_failed(&mut tx, mail.id, &e, None).await?;
                }
                Err(Failure::Transient(e)) => {
                    let attempts = mail.attempts + 1;
                    let retry_in = (attempts < self.max_attempts).then(|| backoff(attempts));
                    tracing::warn!(id = %mail.id, attempts, error = %e, "mail not sent");
                    repo::mail_failed(&mut tx, mail.id, &e, retry_in).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(mails.len())
    }

    async fn send(&self, mail: &PendingMail) -> Result<(), Failure> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| Failure::Permanent(format!("recipient {:?}: {e}", mail.recipient)))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
            Err(e) => Err(Failure::Transient(e.to_string())),
        }
    }
}

enum Failure {
    Permanent(String),
    Transient(String),
}

/// 10 s, 20 s, 40 s ... capped at an hour, each plus up to as much again of
/// jitter, so mail that failed together (a relay outage) is not retried in
/// one burst.
fn backoff(attempts: i32) -> Duration {
    let nth = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    Backoff::between(Duration::from_secs(10), Duration::from_secs(3600)).nth_delay(nth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_an_hour() {
        let secs = |s| Duration::from_secs(s);
        assert!((secs(10)..secs(20)).contains(&backoff(1)));
        assert!((secs(20)..secs(40)).contains(&backoff(2)));
        assert_eq!(backoff(30), secs(3600));
    }
}
