//! The OpenAI API as the gateway reads it: the `model` a request names, the text its routing
//! hashes, and the error body (`{"error": {message, type, param, code}}`) clients parse.

use serde_json::{Value, json};

/// What the gateway needs from a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The `model` field: a Server's name, one of its `servedModelNames`, or
    /// `<server>/<adapter>`.
    pub model: String,
    /// The text prefix-hash routing hashes: the prompt, the first message's content, or the
    /// embedding input.
    pub prefix: String,
}

/// Reads `model` and the routing text of a completion, chat or embedding request.
pub fn read(body: &[u8]) -> Result<Inbound, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}"), None))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object",
            None,
        ));
    };
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::bad_request(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "model must be a string",
                Some("model"),
            ));
        }
    };
    let prefix = first_text(map.get("prompt"))
        .or_else(|| {
            map.get("messages")
                .and_then(|m| m.as_array())
                .and_then(|m| m.first())
                .and_then(|m| first_text(m.get("content")))
        })
        .or_else(|| first_text(map.get("input")))
        .unwrap_or_default();
    Ok(Inbound { model, prefix })
}

/// The adapter a `model` of the form `<server>/<adapter>` names.
pub fn adapter_of(model: &str) -> Option<&str> {
    model.split_once('/').map(|(_, adapter)| adapter)
}

/// `body` with its `model` replaced: what the replica is asked for (an adapter answers to its
/// own name there). `body` was read by [`read`], so it is a JSON object.
pub fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut value: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}"), None))?;
    value.insert("model".into(), Value::String(model.to_owned()));
    serde_json::to_vec(&value)
        .map_err(|e| ApiError::bad_request(format!("the body cannot be written: {e}"), None))
}

/// A string, the first string of a list, or the first text part of a content list.
fn first_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(|i| match i {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("text").and_then(|t| t.as_str()).map(str::to_owned),
            _ => None,
        }),
        _ => None,
    }
}

/// The first `chars` characters of `text` (never splitting a character).
pub fn prefix_of(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// An error answered in the OpenAI shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    /// 404 `model_not_found`, as the OpenAI API answers a model it does not have.
    pub fn unknown_model(model: &str) -> ApiError {
        ApiError {
            status: 404,
            message: format!(
                "The model `{model}` does not exist: no Server has this name or lists it in spec.servedModelNames, and no Server has an adapter answering to it as `<server>/<adapter>` (GET /v1/models lists the models served)"
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: no replica could take the request in time.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            status: 503,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("model_unavailable"),
            retry_after: Some(retry_after),
        }
    }

    /// 502: every replica tried failed before answering.
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 502,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("upstream_error"),
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// The `/v1/models` list of the given ids.
pub fn model_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    let data: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "substratus"}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adapter_request_is_rewritten_to_the_adapter_keeping_every_other_field() {
        assert_eq!(adapter_of("tiny/sql"), Some("sql"));
        assert_eq!(adapter_of("tiny"), None);
        let body = br#"{"model": "tiny/sql", "prompt": "x", "stream": true, "n": 2}"#;
        let out: Value = serde_json::from_slice(&with_model(body, "sql").unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"model": "sql", "prompt": "x", "stream": true, "n": 2})
        );
    }

    #[test]
    fn model_and_routing_text_come_from_each_request_kind() {
        let r = read(br#"{"model": "m", "prompt": "hello", "max_tokens": 3}"#).unwrap();
        assert_eq!((r.model.as_str(), r.prefix.as_str()), ("m", "hello"));
        let r = read(br#"{"model": "m", "prompt": ["first", "second"]}"#).unwrap();
        assert_eq!(r.prefix, "first");
        let r = read(
            br#"{"model": "c", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.prefix.as_str()), ("c", "be brief"));
        let r = read(
            br#"{"model": "c", "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.prefix, "parts");
        let r = read(br#"{"model": "e", "input": "embed me"}"#).unwrap();
        assert_eq!(r.prefix, "embed me");
        let r = read(br#"{"model": "e"}"#).unwrap();
        assert_eq!(r.prefix, "");
    }

    #[test]
    fn a_request_without_a_usable_model_is_refused_naming_the_field() {
        for body in [
            &br#"{"prompt": "x"}"#[..],
            br#"{"model": "", "prompt": "x"}"#,
            br#"{"model": 3}"#,
        ] {
            let e = read(body).unwrap_err();
            assert_eq!((e.status, e.param), (400, Some("model")), "{e:?}");
        }
        assert_eq!(read(b"not json").unwrap_err().status, 400);
        assert_eq!(read(b"[1]").unwrap_err().status, 400);
    }

    #[test]
    fn errors_have_the_openai_shape() {
        let e = ApiError::unknown_model("nope");
        let b = e.body();
        assert_eq!(e.status, 404);
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["param"], "model");
        assert!(b["error"]["message"].as_str().unwrap().contains("`nope`"));
        let u = ApiError::unavailable("waiting", 30);
        assert_eq!((u.status, u.retry_after), (503, Some(30)));
        assert_eq!(u.body()["error"]["type"], "server_error");
    }

    #[test]
    fn prefixes_never_split_a_character() {
        assert_eq!(prefix_of("héllo", 2), "hé");
        assert_eq!(prefix_of("ab", 10), "ab");
        assert_eq!(prefix_of("", 3), "");
    }

    #[test]
    fn the_model_list_has_one_entry_per_id() {
        let l = model_list(["a", "b/c"]);
        assert_eq!(l["object"], "list");
        let ids: Vec<&str> = l["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b/c"]);
    }
}
