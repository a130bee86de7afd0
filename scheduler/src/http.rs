//! The HTTP API (axum). Every endpoint is listed in [`crate::wire`]'s table; [`app`] builds the
//! router so tests call handlers without a socket.
//!
//! Handlers only parse and authorize; the change itself is one operation on the core actor,
//! whose answer arrives once the change is durable. Errors are [`ApiError`] bodies; a 401
//! carries `WWW-Authenticate: Basic realm="hearth"` (people) or `Bearer realm="hearth"`
//! (agents), a 403 names the missing permission. Credentials are never logged.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

#[allow(unused_imports)] // the OpenAPI attributes name the response types
use crate::api::{
    CONDITION_PATH, ExecutorCondition, STATUS_PATH, StatusAck, StatusConflict, StatusUpdate,
};
use crate::auth::{AuthFailure, Security, bearer_matches};
use crate::core::{COMMIT_BUCKETS, CoreGone, CoreHandle};
use crate::state::{OpError, StatusReply, SyncReply};
#[allow(unused_imports)] // the OpenAPI attributes name the response types
use crate::wire::{
    AGENT_SYNC_PATH, AgentOrders, AgentSync, ApiError, AuditEntry, BackupInfo, ChangeResponse,
    CreateJobRequest, HostStatus, InstancesRequest, JobDetail, JobKey, JobSummary,
    ReconcileRequest, ReconcileStatus, TaskStatus,
};

/// Where backups go.
#[derive(Debug, Clone)]
pub struct Backups {
    /// The live database.
    pub db: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub kept: usize,
}

/// What handlers share. Its `Debug` never shows the agent tokens.
#[derive(Clone)]
pub struct AppState {
    pub core: CoreHandle,
    pub security: Option<Arc<Security>>,
    pub agent_tokens: Arc<Vec<String>>,
    pub auth_reads: bool,
    pub agent_timeout: Duration,
    pub backups: Arc<Backups>,
    /// Becomes true when the server shuts down: held long-polls answer at once.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("security", &self.security.is_some())
            .field(
                "agent_tokens",
                &format_args!("<{} redacted>", self.agent_tokens.len()),
            )
            .field("auth_reads", &self.auth_reads)
            .field("agent_timeout", &self.agent_timeout)
            .field("backups", &self.backups)
            .finish_non_exhaustive()
    }
}

/// An error answer.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    body: ApiError,
    challenge: Option<&'static str>,
}

impl Failure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            body: ApiError {
                error: code.to_owned(),
                message: message.into(),
            },
            challenge: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(c) = self.challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        r
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Failure {
        Failure::new(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.code,
            e.message,
        )
    }
}

impl From<CoreGone> for Failure {
    fn from(e: CoreGone) -> Failure {
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e.to_string())
    }
}

fn auth_failure(f: AuthFailure) -> Failure {
    match f {
        AuthFailure::Unauthenticated(m) => Failure {
            challenge: Some(BASIC_CHALLENGE),
            ..Failure::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
        },
        AuthFailure::Forbidden { user, permission } => Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "user {user} lacks permission {permission}; ask an administrator for a role \
                 granting it"
            ),
        ),
    }
}

fn bad_json(e: JsonRejection) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

const BASIC_CHALLENGE: &str = "Basic realm=\"hearth\"";
const BEARER_CHALLENGE: &str = "Bearer realm=\"hearth\"";

impl AppState {
    /// Who is asking, and may they: `permission` None is a read.
    fn authorize(&self, headers: &HeaderMap, permission: Option<&str>) -> Result<String, Failure> {
        let user = self.authenticate(headers, permission.is_some())?;
        match permission {
            Some(p) => self.permit(user, p),
            None => Ok(user),
        }
    }

    /// Who is asking (`anonymous` without security, or for a read when reads are open). Checked
    /// before a request body is parsed, so that bad credentials are a 401 whatever the body.
    fn authenticate(&self, headers: &HeaderMap, change: bool) -> Result<String, Failure> {
        let Some(sec) = &self.security else {
            return Ok("anonymous".to_owned());
        };
        if !change && !self.auth_reads {
            return Ok("anonymous".to_owned());
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        sec.authenticate(auth).map_err(auth_failure)
    }

    /// Whether an authenticated `user` holds `permission`: 403 naming it when not.
    fn permit(&self, user: String, permission: &str) -> Result<String, Failure> {
        match &self.security {
            Some(sec) if !sec.permits(&user, permission) => {
                Err(auth_failure(AuthFailure::Forbidden {
                    user,
                    permission: permission.to_owned(),
                }))
            }
            _ => Ok(user),
        }
    }

    /// Agents and executors: a bearer token when tokens are configured.
    fn authorize_agent(&self, headers: &HeaderMap) -> Result<(), Failure> {
        if self.agent_tokens.is_empty() {
            return Ok(());
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if bearer_matches(auth, &self.agent_tokens) {
            Ok(())
        } else {
            Err(Failure {
                challenge: Some(BEARER_CHALLENGE),
                ..Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "agent token required: start the agent with --token-file holding one of the \
                     scheduler's agent tokens",
                )
            })
        }
    }
}

fn manager(rpc: &str, key: &JobKey) -> String {
    format!(
        "thrift.AuroraSchedulerManager:{rpc}:{}:{}:{}",
        key.role, key.environment, key.name
    )
}

fn job_key(parts: (String, String, String, String)) -> Result<JobKey, Failure> {
    JobKey::new(&parts.0, &parts.1, &parts.2, &parts.3)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/leaderhealth", get(leaderhealth))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/jobs", post(create_job).get(list_jobs))
        .route("/api/v1/jobs/{cluster}/{role}/{env}/{name}", get(get_job))
        .route(
            "/api/v1/jobs/{cluster}/{role}/{env}/{name}/tasks",
            get(job_tasks),
        )
        .route(
            "/api/v1/jobs/{cluster}/{role}/{env}/{name}/kill",
            post(kill_job),
        )
        .route(
            "/api/v1/jobs/{cluster}/{role}/{env}/{name}/restart",
            post(restart_job),
        )
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{host}/drain", post(drain_host))
        .route("/api/v1/hosts/{host}/activate", post(activate_host))
        .route("/api/v1/backups", post(backup_now).get(list_backups))
        .route("/api/v1/reconcile", get(reconcile_get).post(reconcile_post))
        .route("/api/v1/audit", get(audit))
        .route(AGENT_SYNC_PATH, post(agent_sync))
        .route(STATUS_PATH, post(status))
        .route(CONDITION_PATH, post(executor_condition))
        .with_state(state)
}

/// `GET /health`
#[utoipa::path(get, path = "/health", responses((status = 200, description = "OK", content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "OK"
}

/// `GET /leaderhealth`: this scheduler always leads (one scheduler, no election yet).
#[utoipa::path(get, path = "/leaderhealth", responses((status = 200, description = "OK", content_type = "text/plain")))]
pub async fn leaderhealth() -> &'static str {
    "OK"
}

/// `POST /api/v1/jobs`
#[utoipa::path(post, path = "/api/v1/jobs", request_body = CreateJobRequest, responses((status = 201, body = JobSummary), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn create_job(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateJobRequest>, JsonRejection>,
) -> Result<Response, Failure> {
    let user = st.authenticate(&headers, true)?;
    let Json(req) = body.map_err(bad_json)?;
    let user = st.permit(user, &manager("createJob", &req.key))?;
    let summary = st
        .core
        .call(move |s, now| s.create_job(req.key, req.config, &user, now))
        .await??;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RoleQuery {
    role: Option<String>,
}

/// `GET /api/v1/jobs[?role=R]`
#[utoipa::path(get, path = "/api/v1/jobs", params(("role" = Option<String>, Query)), responses((status = 200, body = Vec<JobSummary>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn list_jobs(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RoleQuery>,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let jobs = st
        .core
        .call(move |s, _| s.list_jobs(q.role.as_deref()))
        .await?;
    Ok(Json(jobs).into_response())
}

/// `GET /api/v1/jobs/{cluster}/{role}/{env}/{name}`
#[utoipa::path(get, path = "/api/v1/jobs/{cluster}/{role}/{env}/{name}", params(("cluster" = String, Path), ("role" = String, Path), ("env" = String, Path), ("name" = String, Path)), responses((status = 200, body = JobDetail), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn get_job(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(parts): Path<(String, String, String, String)>,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let key = job_key(parts)?;
    let detail = st.core.call(move |s, _| s.job_detail(&key)).await??;
    Ok(Json(detail).into_response())
}

/// `GET /api/v1/jobs/{cluster}/{role}/{env}/{name}/tasks`
#[utoipa::path(get, path = "/api/v1/jobs/{cluster}/{role}/{env}/{name}/tasks", params(("cluster" = String, Path), ("role" = String, Path), ("env" = String, Path), ("name" = String, Path)), responses((status = 200, body = Vec<TaskStatus>), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn job_tasks(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(parts): Path<(String, String, String, String)>,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let key = job_key(parts)?;
    let tasks = st.core.call(move |s, _| s.job_tasks(&key)).await??;
    Ok(Json(tasks).into_response())
}

/// An [`InstancesRequest`] body; an empty body means every instance.
fn instances_body(body: &[u8]) -> Result<Option<Vec<u32>>, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<InstancesRequest>(body)
        .map(|r| r.instances)
        .map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body: {e}; send {{\"instances\": [0, 1]}} or nothing for every instance"),
            )
        })
}

/// `POST .../kill`
#[utoipa::path(post, path = "/api/v1/jobs/{cluster}/{role}/{env}/{name}/kill", params(("cluster" = String, Path), ("role" = String, Path), ("env" = String, Path), ("name" = String, Path)), request_body = InstancesRequest, responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn kill_job(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(parts): Path<(String, String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let key = job_key(parts)?;
    let user = st.authorize(&headers, Some(&manager("killTasks", &key)))?;
    let instances = instances_body(&body)?;
    let r = st
        .core
        .call(move |s, now| s.kill_job(&key, instances.as_deref(), &user, now))
        .await??;
    Ok(Json(r).into_response())
}

/// `POST .../restart`
#[utoipa::path(post, path = "/api/v1/jobs/{cluster}/{role}/{env}/{name}/restart", params(("cluster" = String, Path), ("role" = String, Path), ("env" = String, Path), ("name" = String, Path)), request_body = InstancesRequest, responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn restart_job(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(parts): Path<(String, String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let key = job_key(parts)?;
    let user = st.authorize(&headers, Some(&manager("restartShards", &key)))?;
    let instances = instances_body(&body)?;
    let r = st
        .core
        .call(move |s, now| s.restart_job(&key, instances.as_deref(), &user, now))
        .await??;
    Ok(Json(r).into_response())
}

/// `GET /api/v1/hosts`
#[utoipa::path(get, path = "/api/v1/hosts", responses((status = 200, body = Vec<HostStatus>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn list_hosts(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let hosts = st.core.call(|s, now| s.list_hosts(now)).await?;
    Ok(Json(hosts).into_response())
}

fn check_host(host: &str) -> Result<(), Failure> {
    if host.is_empty() || host.len() > 255 || host.contains(char::is_whitespace) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("host {host:?}: give a host name as the agent registered it"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/hosts/{host}/drain`
#[utoipa::path(post, path = "/api/v1/hosts/{host}/drain", params(("host" = String, Path)), responses((status = 200, body = HostStatus), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn drain_host(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(host): Path<String>,
) -> Result<Response, Failure> {
    check_host(&host)?;
    let user = st.authorize(&headers, Some("thrift.AuroraAdmin:drainHosts"))?;
    let h = st
        .core
        .call(move |s, now| s.drain_host(&host, &user, now))
        .await?;
    Ok(Json(h).into_response())
}

/// `POST /api/v1/hosts/{host}/activate`
#[utoipa::path(post, path = "/api/v1/hosts/{host}/activate", params(("host" = String, Path)), responses((status = 200, body = HostStatus), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn activate_host(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(host): Path<String>,
) -> Result<Response, Failure> {
    check_host(&host)?;
    let user = st.authorize(&headers, Some("thrift.AuroraAdmin:endMaintenance"))?;
    let h = st
        .core
        .call(move |s, now| s.activate_host(&host, &user, now))
        .await??;
    Ok(Json(h).into_response())
}

/// `POST /api/v1/backups`
#[utoipa::path(post, path = "/api/v1/backups", responses((status = 200, body = BackupInfo), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn backup_now(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let user = st.authorize(&headers, Some("thrift.AuroraAdmin:performBackup"))?;
    let b = st.backups.clone();
    let info =
        tokio::task::spawn_blocking(move || crate::server::backup_now(&b.db, &b.dir, b.kept))
            .await
            .map_err(|e| {
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| {
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
            })?;
    let name = info.name.clone();
    st.core
        .call(move |s, now| s.record_audit(now, &user, "performBackup", &name, String::new()))
        .await?;
    Ok(Json(info).into_response())
}

/// `GET /api/v1/backups`
#[utoipa::path(get, path = "/api/v1/backups", responses((status = 200, body = Vec<BackupInfo>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn list_backups(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    st.authorize(&headers, Some("thrift.AuroraAdmin:listBackups"))?;
    let dir = st.backups.dir.clone();
    let list = tokio::task::spawn_blocking(move || crate::server::list_backups(&dir))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    Ok(Json(list).into_response())
}

/// `GET /api/v1/reconcile`
#[utoipa::path(get, path = "/api/v1/reconcile", responses((status = 200, body = ReconcileStatus), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn reconcile_get(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let r = st.core.call(|s, _| s.reconcile_status()).await?;
    Ok(Json(r).into_response())
}

/// `POST /api/v1/reconcile`
#[utoipa::path(post, path = "/api/v1/reconcile", request_body = ReconcileRequest, responses((status = 200, body = ReconcileStatus), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn reconcile_post(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReconcileRequest>, JsonRejection>,
) -> Result<Response, Failure> {
    let user = st.authenticate(&headers, true)?;
    let Json(req) = body.map_err(bad_json)?;
    let user = st.permit(user, "thrift.AuroraAdmin:triggerExplicitTaskReconciliation")?;
    if !req.confirm {
        let r = st.core.call(|s, _| s.reconcile_status()).await?;
        return Ok(Json(r).into_response());
    }
    let r = st
        .core
        .call(move |s, now| s.reconcile_confirm(&user, now))
        .await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/audit[?limit=N]`
#[utoipa::path(get, path = "/api/v1/audit", params(("limit" = Option<u32>, Query)), responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LimitQuery>,
) -> Result<Response, Failure> {
    st.authorize(&headers, None)?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let db = st.backups.db.clone();
    let list = tokio::task::spawn_blocking(move || {
        let conn = crate::storage::open_reader(&db)?;
        crate::storage::read_audit(&conn, limit)
    })
    .await
    .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    Ok(Json(list).into_response())
}

/// Longest a sync is held without orders.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// `POST /api/v1/agents/sync`: the agents' long-poll.
#[utoipa::path(post, path = "/api/v1/agents/sync", request_body = AgentSync, responses((status = 200, body = AgentOrders), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn agent_sync(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<AgentSync>, JsonRejection>,
) -> Result<Response, Failure> {
    st.authorize_agent(&headers)?;
    let Json(sync) = body.map_err(bad_json)?;
    check_host(&sync.host)?;
    let host = sync.host.clone();
    let acked = sync.acked_epoch;
    // Hold the request well within the agent timeout, so a waiting agent stays alive.
    let wait = Duration::from_millis(sync.wait_ms)
        .min(MAX_WAIT)
        .min(st.agent_timeout / 3);
    let reply = st.core.call(move |s, now| s.agent_sync(&sync, now)).await?;
    let orders = match reply {
        SyncReply::Orders(o) => o,
        SyncReply::Wait(mut rx) => {
            let mut down = st.shutting_down.clone();
            if !*down.borrow() {
                tokio::select! {
                    _ = tokio::time::timeout(wait, rx.changed()) => {}
                    _ = down.changed() => {}
                }
            }
            st.core
                .call(move |s, now| s.agent_poll(&host, acked, now))
                .await?
        }
    };
    Ok(Json(orders).into_response())
}

/// `POST /api/v1/status`: executors' status reports (exactly once, in order).
#[utoipa::path(post, path = "/api/v1/status", request_body = StatusUpdate, responses((status = 200, body = StatusAck), (status = 409, body = StatusConflict), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<StatusUpdate>, JsonRejection>,
) -> Result<Response, Failure> {
    st.authorize_agent(&headers)?;
    let Json(update) = body.map_err(bad_json)?;
    let reply = st
        .core
        .call(move |s, now| s.status_update(&update, now))
        .await?;
    Ok(match reply {
        StatusReply::Ack(a) => (StatusCode::OK, Json(a)).into_response(),
        StatusReply::Conflict(c) => (StatusCode::CONFLICT, Json(c)).into_response(),
    })
}

/// `POST /api/v1/status/condition`: an executor's live condition (checkpoint writes failing),
/// outside the sequence of status updates.
#[utoipa::path(post, path = "/api/v1/status/condition", request_body = ExecutorCondition, responses((status = 204, description = "Kept"), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn executor_condition(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ExecutorCondition>, JsonRejection>,
) -> Result<Response, Failure> {
    st.authorize_agent(&headers)?;
    let Json(c) = body.map_err(bad_json)?;
    st.core.call(move |s, _now| s.executor_condition(c)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> Result<Response, Failure> {
    let (counts, stats, hosts, jobs, hold, polls) = st
        .core
        .call(|s, now| {
            let hosts: Vec<(bool, &'static str)> = s
                .list_hosts(now)
                .into_iter()
                .map(|h| {
                    (
                        h.alive,
                        match h.mode {
                            crate::wire::HostMode::None => "NONE",
                            crate::wire::HostMode::Scheduled => "SCHEDULED",
                            crate::wire::HostMode::Draining => "DRAINING",
                            crate::wire::HostMode::Drained => "DRAINED",
                        },
                    )
                })
                .collect();
            (
                s.task_counts(),
                s.stats.clone(),
                hosts,
                s.jobs.len(),
                s.hold,
                s.long_polls(None),
            )
        })
        .await?;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP hearth_scheduler_tasks Tasks kept, by state.");
    let _ = writeln!(out, "# TYPE hearth_scheduler_tasks gauge");
    for (state, n) in &counts {
        let _ = writeln!(out, "hearth_scheduler_tasks{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP hearth_scheduler_transitions_total Task state transitions, by target state."
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_transitions_total counter");
    for (state, n) in &stats.transitions {
        let _ = writeln!(
            out,
            "hearth_scheduler_transitions_total{{state=\"{state}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# TYPE hearth_scheduler_illegal_transitions_total counter"
    );
    let _ = writeln!(
        out,
        "hearth_scheduler_illegal_transitions_total {}",
        stats.illegal_transitions
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_placements_total counter");
    let _ = writeln!(
        out,
        "hearth_scheduler_placements_total {}",
        stats.placements
    );
    let _ = writeln!(
        out,
        "# TYPE hearth_scheduler_placement_failures_total counter"
    );
    let _ = writeln!(
        out,
        "hearth_scheduler_placement_failures_total {}",
        stats.placement_failures
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_jobs gauge");
    let _ = writeln!(out, "hearth_scheduler_jobs {jobs}");
    let _ = writeln!(
        out,
        "# HELP hearth_scheduler_agent_long_polls Agent syncs held waiting for orders."
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_agent_long_polls gauge");
    let _ = writeln!(out, "hearth_scheduler_agent_long_polls {polls}");
    let _ = writeln!(out, "# TYPE hearth_scheduler_reconcile_hold gauge");
    let _ = writeln!(out, "hearth_scheduler_reconcile_hold {}", u8::from(hold));
    let _ = writeln!(
        out,
        "# HELP hearth_scheduler_hosts Hosts, by liveness and mode."
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_hosts gauge");
    let mut by: std::collections::BTreeMap<(bool, &str), u32> = Default::default();
    for h in hosts {
        *by.entry(h).or_default() += 1;
    }
    for ((alive, mode), n) in by {
        let _ = writeln!(
            out,
            "hearth_scheduler_hosts{{alive=\"{alive}\",mode=\"{mode}\"}} {n}"
        );
    }
    let stats = &st.core.stats;
    let (buckets, sum_us) = *stats
        .latency
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(
        out,
        "# HELP hearth_scheduler_storage_commit_seconds Latency of group commits."
    );
    let _ = writeln!(
        out,
        "# TYPE hearth_scheduler_storage_commit_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
        cumulative += buckets[i];
        let _ = writeln!(
            out,
            "hearth_scheduler_storage_commit_seconds_bucket{{le=\"{b}\"}} {cumulative}"
        );
    }
    cumulative += buckets[COMMIT_BUCKETS.len()];
    let _ = writeln!(
        out,
        "hearth_scheduler_storage_commit_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "hearth_scheduler_storage_commit_seconds_sum {}",
        sum_us as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "hearth_scheduler_storage_commit_seconds_count {cumulative}"
    );
    let _ = writeln!(out, "# TYPE hearth_scheduler_operations_total counter");
    let _ = writeln!(
        out,
        "hearth_scheduler_operations_total {}",
        stats.ops.load(Ordering::Relaxed)
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}
