//! Errors as one line, the way kubectl prints them: `Error from server (NotFound): ...` for
//! what the API server refused, else `error: what failed: why`. The whole chain of causes
//! with `-v`.
//!
//! Exit codes: 0 success; 1 an error (printed on stderr); 2 a usage error (unknown flag or
//! bad argument, printed by the argument parser).

/// The one line `sub` prints for `e`; with `verbose`, every cause on a line of its own.
pub fn one_line(e: &anyhow::Error, verbose: bool) -> String {
    if verbose {
        let mut out = format!("error: {e}");
        for cause in e.chain().skip(1) {
            out.push_str(&format!("\n  caused by: {}", described(cause)));
        }
        return out;
    }
    for cause in e.chain() {
        if let Some(kube::Error::Api(status)) = cause.downcast_ref::<kube::Error>() {
            return format!(
                "Error from server ({}): {}",
                if status.reason.is_empty() {
                    status.code.to_string()
                } else {
                    status.reason.clone()
                },
                status.message
            );
        }
    }
    let causes: Vec<String> = e.chain().map(described).collect();
    format!("error: {}", causes.join(": "))
}

/// A cause in words: the API server's refusal without the debug dump of its status.
fn described(cause: &(dyn std::error::Error + 'static)) -> String {
    match cause.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => format!("{} ({})", status.message, status.reason),
        _ => cause.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn not_found() -> anyhow::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound",
            "message": "models.substratus.ai \"x\" not found"
        }))
        .unwrap();
        Err::<(), _>(kube::Error::Api(status.into()))
            .context("getting Model x")
            .unwrap_err()
    }

    #[test]
    fn a_refusal_of_the_api_server_reads_as_kubectl_prints_it() {
        let e = not_found();
        assert_eq!(
            one_line(&e, false),
            "Error from server (NotFound): models.substratus.ai \"x\" not found"
        );
        let verbose = one_line(&e, true);
        assert!(
            verbose.starts_with("error: getting Model x\n  caused by: "),
            "{verbose}"
        );
        assert!(
            !verbose.contains("Status {"),
            "no debug structures: {verbose}"
        );
    }

    #[test]
    fn other_errors_are_one_line_of_their_causes() {
        let e = Err::<(), _>(std::io::Error::other("connection refused"))
            .context("connecting to the cluster")
            .unwrap_err();
        assert_eq!(
            one_line(&e, false),
            "error: connecting to the cluster: connection refused"
        );
    }
}
