//! Outgoing e-mail over SMTP (`[email]`): the card link a returning customer asked for, sent
//! to the address stored with their membership, never to whoever typed it; and the link that
//! confirms a new join's address (double opt-in) before any card exists.
//!
//! Each message is plain text and HTML, rendered per program and language from
//! `templates/email/`.

use std::time::Duration;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailConfig, SmtpTls};

/// An SMTP failure without the server's reply text.
fn smtp_summary(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_permanent() {
        "refused permanently"
    } else if e.is_transient() {
        "refused for now"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_tls() {
        "TLS failed"
    } else {
        "connection or protocol failure"
    };
    match e.status() {
        Some(code) => format!("{kind} (reply {code})"),
        None => kind.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("email.from is not an address: {0}")]
    From(lettre::address::AddressError),
    #[error("the recipient is not an address: {0}")]
    To(lettre::address::AddressError),
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    /// Shown by kind and reply code only: servers echo the recipient's address in their
    /// replies (`550 <ada@example.com>: unknown user`), and errors reach the log.
    #[error("SMTP: {}", smtp_summary(.0))]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("rendering the message: {0}")]
    Render(#[from] askama::Error),
}

/// The languages the messages are written in; English is the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Fr,
}

impl Lang {
    /// The first supported language of an `Accept-Language` header, else English.
    pub fn from_accept_language(header: &str) -> Lang {
        header
            .split(',')
            .filter_map(|part| part.split(';').next())
            .map(|tag| tag.trim().to_ascii_lowercase())
            .find_map(|tag| match tag.split('-').next() {
                Some("en") => Some(Lang::En),
                Some("fr") => Some(Lang::Fr),
                _ => None,
            })
            .unwrap_or(Lang::En)
    }
}

/// What a card-link message says: whose card, from which program, and the link.
pub struct CardLink {
    pub program_name: String,
    pub member_name: String,
    pub link: String,
    pub valid_days: u32,
}

#[derive(Template)]
#[template(path = "email/card_link_en.txt")]
struct EnText<'a>(&'a CardLink);
#[derive(Template)]
#[template(path = "email/card_link_en.html")]
struct EnHtml<'a>(&'a CardLink);
#[derive(Template)]
#[template(path = "email/card_link_fr.txt")]
struct FrText<'a>(&'a CardLink);
#[derive(Template)]
#[template(path = "email/card_link_fr.html")]
struct FrHtml<'a>(&'a CardLink);

impl CardLink {
    /// (subject, plain text, HTML) in `lang`.
    pub fn render(&self, lang: Lang) -> Result<(String, String, String), askama::Error> {
        Ok(match lang {
            Lang::En => (
                format!("Your {} card", self.program_name),
                EnText(self).render()?,
                EnHtml(self).render()?,
            ),
            Lang::Fr => (
                format!("Votre carte {}", self.program_name),
                FrText(self).render()?,
                FrHtml(self).render()?,
            ),
        })
    }
}

/// What a join confirmation says: the program and the link that issues the card. Nothing the
/// visitor typed (a name could carry a spammer's text to any address).
pub struct JoinConfirm {
    pub program_name: String,
    pub link: String,
    pub valid_hours: u32,
}

#[derive(Template)]
#[template(path = "email/join_confirm_en.txt")]
struct ConfirmEnText<'a>(&'a JoinConfirm);
#[derive(Template)]
#[template(path = "email/join_confirm_en.html")]
struct ConfirmEnHtml<'a>(&'a JoinConfirm);
#[derive(Template)]
#[template(path = "email/join_confirm_fr.txt")]
struct ConfirmFrText<'a>(&'a JoinConfirm);
#[derive(Template)]
#[template(path = "email/join_confirm_fr.html")]
struct ConfirmFrHtml<'a>(&'a JoinConfirm);

impl JoinConfirm {
    /// (subject, plain text, HTML) in `lang`.
    pub fn render(&self, lang: Lang) -> Result<(String, String, String), askama::Error> {
        Ok(match lang {
            Lang::En => (
                format!("Confirm your e-mail to get your {} card", self.program_name),
                ConfirmEnText(self).render()?,
                ConfirmEnHtml(self).render()?,
            ),
            Lang::Fr => (
                format!(
                    "Confirmez votre e-mail pour recevoir votre carte {}",
                    self.program_name
                ),
                ConfirmFrText(self).render()?,
                ConfirmFrHtml(self).render()?,
            ),
        })
    }
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `None` when `[email]` is not configured.
    pub fn from_config(c: &EmailConfig) -> Result<Option<Mailer>, EmailError> {
        let (Some(host), Some(from)) = (&c.host, &c.from) else {
            return Ok(None);
        };
        let from: Mailbox = from.parse().map_err(EmailError::From)?;
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(TlsParameters::new(host.clone())?),
            SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(host.clone())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(c.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(c.timeout_seconds.max(1))));
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends `mail` to `to` in `lang`.
    pub async fn send_card_link(
        &self,
        to: &str,
        mail: &CardLink,
        lang: Lang,
    ) -> Result<(), EmailError> {
        self.send(to, mail.render(lang)?).await
    }

    /// Sends the link confirming a join to the address it gave, in `lang`.
    pub async fn send_join_confirm(
        &self,
        to: &str,
        mail: &JoinConfirm,
        lang: Lang,
    ) -> Result<(), EmailError> {
        self.send(to, mail.render(lang)?).await
    }

    async fn send(
        &self,
        to: &str,
        (subject, text, html): (String, String, String),
    ) -> Result<(), EmailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.parse().map_err(EmailError::To)?)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))?;
        self.transport.send(message).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_program_and_carry_the_link_in_both_parts() {
        let mail = CardLink {
            program_name: "Café <Bleu>".into(),
            member_name: "Ada".into(),
            link: "https://x.example/card/abc.def".into(),
            valid_days: 30,
        };
        for lang in [Lang::En, Lang::Fr] {
            let (subject, text, html) = mail.render(lang).unwrap();
            assert!(subject.contains("Café <Bleu>"));
            assert!(text.contains("https://x.example/card/abc.def") && text.contains("Ada"));
            assert!(html.contains(r#"href="https://x.example/card/abc.def""#));
            assert!(html.contains("Café &#60;Bleu&#62;"), "{html}");
        }
        let confirm = JoinConfirm {
            program_name: "Café <Bleu>".into(),
            link: "https://x.example/join/cafe/confirm/tok".into(),
            valid_hours: 24,
        };
        for lang in [Lang::En, Lang::Fr] {
            let (subject, text, html) = confirm.render(lang).unwrap();
            assert!(subject.contains("Café <Bleu>"));
            assert!(
                text.contains("https://x.example/join/cafe/confirm/tok") && text.contains("24")
            );
            assert!(html.contains(r#"href="https://x.example/join/cafe/confirm/tok""#));
            assert!(html.contains("Café &#60;Bleu&#62;"), "{html}");
        }
        assert_eq!(
            Lang::from_accept_language("de-CH, fr-FR;q=0.8, en;q=0.5"),
            Lang::Fr
        );
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }
}
