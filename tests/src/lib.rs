//! Workspace-level tests live in `tests/tests/`; this library holds what they share.

use lexigram::module::AppBuilder;

/// Builds the app and returns the bootstrap report as text. Fails the test (with an empty
/// string, which no assertion on the report accepts) if the build succeeded.
pub async fn build_error(builder: AppBuilder) -> String {
    match builder.build().await {
        Ok(app) => {
            let _ = app.shutdown().await;
            String::new()
        }
        Err(err) => err.to_string(),
    }
}
