//! MD5 in the forms the providers use: hex (the API's `md5Checksum`), base64 (`Content-MD5`,
//! GCS `md5Hash`), and S3 ETags.

use base64::Engine;
use substratus_core::cloud::CloudError;

/// The hex MD5 an S3 ETag stands for: a single-part ETag is the quoted hex MD5; a multipart
/// one (`"<hex>-<parts>"`) is not an MD5 at all.
pub fn etag_md5(etag: &str) -> Option<String> {
    let t = etag.trim().trim_matches('"');
    (t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

/// The base64 form of a hex MD5, as the `Content-MD5` header carries it.
pub fn md5_base64(md5_hex: &str) -> Result<String, CloudError> {
    let bad = || CloudError::Permanent {
        reason: substratus_core::conditions::reasons::INVALID_SPEC,
        message: format!(
            "spec.build.upload.md5Checksum {md5_hex:?} is not 32 hexadecimal characters"
        ),
    };
    if md5_hex.len() != 32 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..16)
        .map(|i| u8::from_str_radix(&md5_hex[2 * i..2 * i + 2], 16))
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes.map_err(|_| bad())?))
}

/// The hex form of a base64 MD5 (GCS `md5Hash`, Azure `Content-MD5`); `None` when it is not
/// 16 bytes of base64.
pub fn md5_hex_of_base64(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    (bytes.len() == 16).then(|| substratus_core::names::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_of_single_part_uploads_are_md5s() {
        assert_eq!(
            etag_md5("\"9E107D9D372BB6826BD81D3542A419D6\"").as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(
            etag_md5("9e107d9d372bb6826bd81d3542a419d6").as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(etag_md5("\"9e107d9d372bb6826bd81d3542a419d6-3\""), None);
    }

    #[test]
    fn content_md5_is_the_base64_of_the_digest() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e, base64 1B2M2Y8AsgTpgAmY7PhCfg==
        assert_eq!(
            md5_base64("d41d8cd98f00b204e9800998ecf8427e").unwrap(),
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
        assert!(md5_base64("xyz").is_err());
    }

    #[test]
    fn base64_md5s_read_back_as_hex() {
        assert_eq!(
            md5_hex_of_base64("1B2M2Y8AsgTpgAmY7PhCfg==").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(md5_hex_of_base64("AAAA"), None);
        assert_eq!(md5_hex_of_base64("not base64!"), None);
    }
}
