//! The web console: the dead-letter places with counts, a filtered list, an item's detail
//! (masked), a transaction's timeline, a chart of outcomes per minute, and replay and
//! discard as buttons. Served by `run` under `/console` on `admin.listen` (loopback by
//! default), only when `OPERATOR_TOKEN` is set.
//!
//! Safety: a login with the token opens a session (an HttpOnly, SameSite=Strict cookie);
//! every change is a POST carrying the session's CSRF token, asks for a reason, and is
//! recorded with the operator's name; a bulk change shows its count first and is refused
//! if the count changed meanwhile. Pages run no script, and the CSP forbids any.

pub mod html;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;

use crate::config::Config;
use crate::operator::{self, Action, Request};
use crate::store::Store;
use crate::store::dlq::{Actor, Done, Place, Selection, Via};
use session::{COOKIE, Session, Sessions, cookie_value, same};

/// At most this many items on a list page.
const PAGE: i64 = 200;

/// What the console needs: the configuration (for replays), the database, the token.
pub struct Console {
    config: Config,
    store: Store,
    token: String,
    sessions: Sessions,
}

impl Console {
    /// The console, if `OPERATOR_TOKEN` is set.
    pub fn new(config: Config, store: Store) -> Option<Arc<Console>> {
        let token = config.secrets.operator_token.clone()?;
        Some(Arc::new(Console {
            config,
            store,
            token,
            sessions: Sessions::default(),
        }))
    }
}

/// The console's routes, under `/console`.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(front))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/actions", get(actions))
        .route("/console/place/{place}", get(place_items))
        .route("/console/place/{place}/item/{id}", get(item))
        .route("/console/place/{place}/confirm", post(confirm))
        .route("/console/place/{place}/act", post(act))
        .route("/console/tx", get(tx))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

/// No script may run, no other site may frame or cache these pages.
async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// A page that could not be shown: what the operator sees instead (boxed: a response is
/// large, and most results are not refusals).
pub struct Refused(Box<Response>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

type Page = Result<Response, Refused>;

/// The logged-in operator, or a redirect to the login page.
fn session(c: &Console, headers: &HeaderMap) -> Result<Session, Refused> {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(cookie_value)
        .and_then(|id| c.sessions.get(id))
        .ok_or_else(|| Refused(Box::new(Redirect::to("/console/login").into_response())))
}

/// The session, if the form's CSRF token is its own.
fn session_with_csrf(c: &Console, headers: &HeaderMap, csrf: &str) -> Result<Session, Refused> {
    let s = session(c, headers)?;
    if same(s.csrf.as_bytes(), csrf.as_bytes()) {
        Ok(s)
    } else {
        Err(refused(
            StatusCode::FORBIDDEN,
            "This form is stale or came from elsewhere (CSRF check). Reload the page and try again.",
            Some(&s),
        ))
    }
}

fn refused(status: StatusCode, text: &str, s: Option<&Session>) -> Refused {
    let who = s.map(|s| (s.operator.as_str(), s.csrf.as_str()));
    Refused(Box::new(
        (status, Html(html::message("Refused", text, who))).into_response(),
    ))
}

fn internal(e: impl std::fmt::Display, s: &Session) -> Refused {
    tracing::error!(error = %e, "console request failed");
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("The database or the broker did not answer: {e}"),
        Some(s),
    )
}

fn show(s: &Session, title: &str, body: &str) -> Response {
    Html(html::page(
        title,
        Some((s.operator.as_str(), s.csrf.as_str())),
        body,
    ))
    .into_response()
}

fn place_of(name: &str, s: &Session) -> Result<Place, Refused> {
    Place::parse(name).ok_or_else(|| refused(StatusCode::NOT_FOUND, "No such place.", Some(s)))
}

async fn login_page() -> Html<String> {
    Html(html::login(None))
}

#[derive(Deserialize)]
struct Login {
    operator: String,
    token: String,
}

async fn login(State(c): State<Arc<Console>>, Form(f): Form<Login>) -> Response {
    let operator = f.operator.trim();
    if !same(f.token.as_bytes(), c.token.as_bytes()) || operator.is_empty() {
        tracing::warn!("console login refused");
        return (
            StatusCode::UNAUTHORIZED,
            Html(html::login(Some("Wrong token, or no name given."))),
        )
            .into_response();
    }
    let operator: String = operator.chars().take(64).collect();
    tracing::info!(operator = %operator, "console login");
    let id = c.sessions.open(&operator);
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=28800");
    let mut r = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, Form(f): Form<Csrf>) -> Page {
    session_with_csrf(&c, &headers, &f.csrf)?;
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(cookie_value)
    {
        c.sessions.close(id);
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "voucher_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(r)
}

async fn front(State(c): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let s = session(&c, &headers)?;
    let now = Utc::now();
    let list = c.store.dlq_summaries().await.map_err(|e| internal(e, &s))?;
    let points = c
        .store
        .outcomes_per_minute(60)
        .await
        .map_err(|e| internal(e, &s))?;
    let body = html::places(&list, &html::chart(&points, now), now);
    Ok(show(&s, "Dead letters", &body))
}

async fn actions(State(c): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let s = session(&c, &headers)?;
    let list = c
        .store
        .operator_actions(200)
        .await
        .map_err(|e| internal(e, &s))?;
    Ok(show(&s, "Audit", &html::actions(&list)))
}

#[derive(Deserialize)]
struct Filter {
    reason: Option<String>,
}

fn selection(reason: &Option<String>) -> Selection {
    match reason.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => Selection::Reason(r.to_owned()),
        None => Selection::All,
    }
}

async fn place_items(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(place): Path<String>,
    Query(f): Query<Filter>,
) -> Page {
    let s = session(&c, &headers)?;
    let place = place_of(&place, &s)?;
    let sel = selection(&f.reason);
    let list = c
        .store
        .dlq_items(place, &sel, PAGE)
        .await
        .map_err(|e| internal(e, &s))?;
    let total = count(&c, place, &sel).await.map_err(|e| internal(e, &s))?;
    let reason = f.reason.as_deref().filter(|r| !r.is_empty());
    let body = html::items(place, reason, &list, total, &s.csrf, Utc::now());
    Ok(show(&s, place.name(), &body))
}

/// How many items `sel` takes now.
async fn count(c: &Console, place: Place, sel: &Selection) -> crate::error::Result<usize> {
    Ok(c.store.dlq_items(place, sel, i64::MAX).await?.len())
}

async fn item(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path((place, id)): Path<(String, String)>,
) -> Page {
    let s = session(&c, &headers)?;
    let place = place_of(&place, &s)?;
    if !place.valid_id(&id) {
        return Err(refused(StatusCode::NOT_FOUND, "No such item.", Some(&s)));
    }
    let found = c
        .store
        .dlq_items(place, &Selection::Ids(vec![id]), 1)
        .await
        .map_err(|e| internal(e, &s))?;
    let Some(i) = found.first() else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "This item no longer waits here: it was replayed or discarded (see Audit).",
            Some(&s),
        ));
    };
    Ok(show(&s, "Item", &html::item(i, &s.csrf, Utc::now())))
}

#[derive(Deserialize)]
struct Bulk {
    csrf: String,
    action: String,
    reason: Option<String>,
}

fn action_of(name: &str, s: &Session) -> Result<Action, Refused> {
    match name {
        "replay" => Ok(Action::Replay),
        "discard" => Ok(Action::Discard),
        _ => Err(refused(StatusCode::BAD_REQUEST, "Unknown action.", Some(s))),
    }
}

async fn confirm(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(place): Path<String>,
    Form(f): Form<Bulk>,
) -> Page {
    let s = session_with_csrf(&c, &headers, &f.csrf)?;
    let place = place_of(&place, &s)?;
    let action = action_of(&f.action, &s)?;
    let sel = selection(&f.reason);
    let n = count(&c, place, &sel).await.map_err(|e| internal(e, &s))?;
    let reason = f.reason.as_deref().filter(|r| !r.is_empty());
    let body = html::confirm(place, action.as_str(), reason, n, &s.csrf);
    Ok(show(&s, "Confirm", &body))
}

#[derive(Deserialize)]
struct Act {
    csrf: String,
    action: String,
    /// One item; else every item the reason filter (or none) takes.
    id: Option<String>,
    reason: Option<String>,
    why: String,
    /// The count the confirmation page showed.
    expect: Option<usize>,
}

async fn act(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(place): Path<String>,
    Form(f): Form<Act>,
) -> Page {
    let s = session_with_csrf(&c, &headers, &f.csrf)?;
    let place = place_of(&place, &s)?;
    let action = action_of(&f.action, &s)?;
    let why = f.why.trim();
    if why.is_empty() {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "Say why: the reason is recorded.",
            Some(&s),
        ));
    }
    if action == Action::Replay
        && let Some(why_not) = place.cannot_replay()
    {
        return Err(refused(StatusCode::BAD_REQUEST, why_not, Some(&s)));
    }
    let ids: Vec<String> = match f.id.as_deref().filter(|i| !i.is_empty()) {
        Some(id) if place.valid_id(id) => vec![id.to_owned()],
        Some(_) => return Err(refused(StatusCode::BAD_REQUEST, "No such item.", Some(&s))),
        None => c
            .store
            .dlq_items(place, &selection(&f.reason), i64::MAX)
            .await
            .map_err(|e| internal(e, &s))?
            .into_iter()
            .map(|i| i.id)
            .collect(),
    };
    if let Some(expect) = f.expect
        && expect != ids.len()
    {
        return Err(refused(
            StatusCode::CONFLICT,
            &format!(
                "The count changed from {expect} to {} since you confirmed: nothing was done. Look again.",
                ids.len()
            ),
            Some(&s),
        ));
    }
    let actor = Actor {
        name: s.operator.clone(),
        via: Via::Console,
    };
    let req = Request {
        action,
        place,
        ids: &ids,
        actor: &actor,
        why,
        rate: None,
    };
    let results = operator::act(&c.config, &c.store, &req, |_| {})
        .await
        .map_err(|e| internal(e, &s))?;
    tracing::info!(operator = %s.operator, action = action.as_str(), place = place.name(), items = results.len(), "console action");
    let lines: Vec<(String, String)> = results
        .into_iter()
        .map(|r| {
            let what = match (r.done, r.error) {
                (Some(Done::Replayed), _) => "replayed".to_string(),
                (Some(Done::Discarded), _) => "discarded".to_string(),
                (Some(Done::AlreadyDone), _) => {
                    "already done: its command had reached its outcome".to_string()
                }
                (Some(Done::NotWaiting), _) => "not waiting any more".to_string(),
                (None, e) => format!("failed: {}", e.unwrap_or_default()),
            };
            (r.id, what)
        })
        .collect();
    Ok(show(
        &s,
        "Done",
        &html::acted(place, action.as_str(), &lines),
    ))
}

#[derive(Deserialize)]
struct TxKey {
    key: String,
}

async fn tx(State(c): State<Arc<Console>>, headers: HeaderMap, Query(q): Query<TxKey>) -> Page {
    let s = session(&c, &headers)?;
    let key = q.key.trim();
    let found = c
        .store
        .find_transactions(key)
        .await
        .map_err(|e| internal(e, &s))?;
    match found.as_slice() {
        [] => Err(refused(
            StatusCode::NOT_FOUND,
            "No transaction matches.",
            Some(&s),
        )),
        [one] => {
            let steps = c
                .store
                .timeline(one.id)
                .await
                .map_err(|e| internal(e, &s))?;
            Ok(show(&s, "Transaction", &html::timeline(one, &steps)))
        }
        many => Ok(show(
            &s,
            "Transactions",
            &html::tx_list(key, many, Utc::now()),
        )),
    }
}
