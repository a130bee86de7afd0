//! The OpenAPI document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! attributes and the wire types' `ToSchema` derives, so it cannot drift from them.

use utoipa::OpenApi;

use crate::http;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Hearth scheduler",
        description = "Jobs, tasks, hosts, backups and audit for people and tools; the agents' \
                       long-poll; executors' status reports. Times are milliseconds since the \
                       Unix epoch."
    ),
    paths(
        http::health,
        http::leaderhealth,
        http::metrics,
        http::openapi,
        http::create_job,
        http::list_jobs,
        http::get_job,
        http::job_tasks,
        http::kill_job,
        http::restart_job,
        http::list_hosts,
        http::drain_host,
        http::activate_host,
        http::backup_now,
        http::list_backups,
        http::reconcile_get,
        http::reconcile_post,
        http::audit,
        http::agent_sync,
        http::status,
        http::executor_condition,
    )
)]
pub struct ApiDoc;

/// The document, as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every endpoint of the table in [`crate::wire`] is in the document.
    #[test]
    fn every_endpoint_of_the_wire_table_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let table = include_str!("wire.rs");
        let mut n = 0;
        for line in table.lines() {
            let Some(row) = line.strip_prefix("//! | `") else {
                continue;
            };
            let Some((method, rest)) = row.split_once(' ') else {
                continue;
            };
            let path = rest.split('`').next().unwrap();
            let path = path.split('[').next().unwrap();
            let method = method.to_ascii_lowercase();
            assert!(
                doc["paths"][path][&method].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
            n += 1;
        }
        assert_eq!(n, 21, "rows of the wire table");
    }
}
