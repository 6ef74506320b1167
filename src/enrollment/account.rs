//! The member's own account page, `/me/<token>`, linked from the back of every live card: the
//! customer withdraws marketing consent, or all consent (closing the membership, which erases
//! them), as easily as they gave it. The token is signed for the card's generation
//! (`LinkSigner::sign_account`); it is the credential, so a form needs nothing more (no other
//! site can post to a URL it does not know).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::links::LinkSigner;
use super::page_error;
use crate::app::AppState;
use crate::domain::Member;
use crate::service::lifecycle::{self, Withdraw};

#[derive(Template, WebTemplate)]
#[template(path = "pages/account.html")]
struct AccountPage {
    program_name: String,
    background: String,
    foreground: String,
    marketing: bool,
    marketing_text: String,
    policy_url: Option<String>,
    closed: bool,
    done: Option<&'static str>,
}

/// The member the token names, if it is valid for their current live card.
async fn member_for(state: &AppState, token: &str) -> Result<Member, Response> {
    let not_found = || (StatusCode::NOT_FOUND, "this link is not valid any more\n").into_response();
    let claimed = LinkSigner::member_of(token).unwrap_or_default().to_string();
    let generation = match state
        .store
        .card_generations(std::slice::from_ref(&claimed))
        .await
    {
        Ok(g) => g.get(&claimed).copied().ok_or_else(not_found)?,
        Err(e) => return Err(page_error(e)),
    };
    let member_id = state
        .links
        .verify_account(token, generation)
        .map_err(|_| not_found())?;
    let pass = state
        .store
        .pass_for_member(&member_id)
        .await
        .map_err(page_error)?;
    if pass.ended_at.is_some() {
        return Err(not_found());
    }
    state.store.get_member(&member_id).await.map_err(page_error)
}

async fn page(state: &AppState, member: &Member, done: Option<&'static str>) -> Response {
    let loaded = async {
        let program = state.store.get_program(&member.program_id).await?;
        let settings = state.store.program_enrollment(&program.id).await?;
        let pass = state.store.pass_for_member(&member.id).await?;
        let template = state.store.get_template(&pass.template_id).await?;
        let marketing = state.store.marketing_allowed(&member.id).await?;
        Ok::<_, crate::storage::StorageError>((program, settings, template, marketing))
    };
    let (program, settings, template, marketing) = match loaded.await {
        Ok(x) => x,
        Err(e) => return page_error(e),
    };
    AccountPage {
        program_name: program.name,
        background: template.design.colors.background.clone(),
        foreground: template.design.colors.foreground.clone(),
        marketing,
        marketing_text: settings
            .marketing_consent_text
            .unwrap_or_else(|| "We may send you offers and news about your card.".into()),
        policy_url: settings.privacy_policy_url,
        closed: false,
        done,
    }
    .into_response()
}

/// `GET /me/<token>`.
pub async fn account_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match member_for(&state, &token).await {
        Ok(member) => page(&state, &member, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct AccountForm {
    action: String,
    confirm: Option<String>,
}

/// `POST /me/<token>`: `action=marketing` withdraws marketing consent; `action=close` with
/// `confirm=yes` withdraws all consent and erases the member. Each is a consent row with
/// source `account_page` and the text the page showed.
pub async fn account_action(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<AccountForm>,
) -> Response {
    let member = match member_for(&state, &token).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (scope, text) = match (form.action.as_str(), form.confirm.as_deref()) {
        ("marketing", _) => (Withdraw::Marketing, "Stop marketing messages"),
        ("close", Some("yes")) => (
            Withdraw::All,
            "Close my membership: your card stops working, your points are forfeited and your name, e-mail address, phone number and birthday are erased.",
        ),
        ("close", _) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                "please tick the box to confirm closing your membership\n",
            )
                .into_response();
        }
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    match lifecycle::withdraw_consent(&state.store, &member.id, scope, "account_page", text).await {
        Ok(_) if scope == Withdraw::All => {
            let program = state.store.get_program(&member.program_id).await;
            AccountPage {
                program_name: program.map(|p| p.name).unwrap_or_default(),
                background: "rgb(255,255,255)".into(),
                foreground: "rgb(0,0,0)".into(),
                marketing: false,
                marketing_text: String::new(),
                policy_url: None,
                closed: true,
                done: Some("Your membership is closed."),
            }
            .into_response()
        }
        Ok(_) => {
            page(
                &state,
                &member,
                Some("You will receive no more marketing messages."),
            )
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "withdrawing consent from the account page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong; please try again\n",
            )
                .into_response()
        }
    }
}
