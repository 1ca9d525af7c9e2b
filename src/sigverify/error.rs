//! Why a request's signature was refused, as the S3 error it is answered with.

/// A verification failure. Small and `Copy`: nothing allocates on the refusal path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.code(), self.message())]
pub enum VerifyError {
    /// The signature is not the one the key's secret gives (or is not even well-formed).
    SignatureDoesNotMatch,
    /// The access key is not in the secrets table.
    InvalidAccessKeyId,
    /// The `Authorization` header cannot be read (the detail says what is wrong).
    AuthorizationHeaderMalformed(&'static str),
    /// The presigned-V4 query parameters cannot be read.
    AuthorizationQueryParametersError(&'static str),
    /// The request's V2/V4 timestamp is more than 15 minutes from `now`.
    RequestTimeTooSkewed,
    /// A presigned URL whose validity ended before `now`.
    Expired,
    /// A presigned V4 URL dated more than 15 minutes after `now`.
    NotYetValid,
    /// No readable `x-amz-date` / `Date` to check the signature's time against.
    MissingDate,
    /// A presigned V2 URL without all of `AWSAccessKeyId`, `Expires`, `Signature`.
    MissingV2QueryParameters,
    /// More than one auth mechanism, or an auth parameter repeated.
    InvalidArgument(&'static str),
}

impl VerifyError {
    /// The S3 error code (`<Code>`).
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            VerifyError::InvalidAccessKeyId => "InvalidAccessKeyId",
            VerifyError::AuthorizationHeaderMalformed(_) => "AuthorizationHeaderMalformed",
            VerifyError::AuthorizationQueryParametersError(_) => {
                "AuthorizationQueryParametersError"
            }
            VerifyError::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            VerifyError::Expired
            | VerifyError::NotYetValid
            | VerifyError::MissingDate
            | VerifyError::MissingV2QueryParameters => "AccessDenied",
            VerifyError::InvalidArgument(_) => "InvalidArgument",
        }
    }

    /// The S3 error message (`<Message>`), S3's wording where it has one.
    pub fn message(&self) -> &'static str {
        match self {
            VerifyError::SignatureDoesNotMatch => {
                "The request signature we calculated does not match the signature you provided. Check your key and signing method."
            }
            VerifyError::InvalidAccessKeyId => {
                "The AWS Access Key Id you provided does not exist in our records."
            }
            VerifyError::AuthorizationHeaderMalformed(m)
            | VerifyError::AuthorizationQueryParametersError(m)
            | VerifyError::InvalidArgument(m) => m,
            VerifyError::RequestTimeTooSkewed => {
                "The difference between the request time and the current time is too large."
            }
            VerifyError::Expired => "Request has expired",
            VerifyError::NotYetValid => "Request is not valid yet",
            VerifyError::MissingDate => {
                "AWS authentication requires a valid Date or x-amz-date header"
            }
            VerifyError::MissingV2QueryParameters => {
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
            }
        }
    }

    /// The HTTP status S3 answers it with: 400 for unreadable or ambiguous
    /// authentication, 403 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::AuthorizationHeaderMalformed(_)
            | VerifyError::AuthorizationQueryParametersError(_)
            | VerifyError::InvalidArgument(_) => 400,
            _ => 403,
        }
    }
}

pub(crate) const ONE_MECHANISM: VerifyError =
    VerifyError::InvalidArgument("Only one auth mechanism allowed");
pub(crate) const REPEATED_PARAMETER: VerifyError =
    VerifyError::InvalidArgument("An authentication query parameter is repeated");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_messages() {
        let cases = [
            (
                VerifyError::SignatureDoesNotMatch,
                "SignatureDoesNotMatch",
                403,
            ),
            (VerifyError::InvalidAccessKeyId, "InvalidAccessKeyId", 403),
            (
                VerifyError::AuthorizationHeaderMalformed("x"),
                "AuthorizationHeaderMalformed",
                400,
            ),
            (
                VerifyError::AuthorizationQueryParametersError("x"),
                "AuthorizationQueryParametersError",
                400,
            ),
            (
                VerifyError::RequestTimeTooSkewed,
                "RequestTimeTooSkewed",
                403,
            ),
            (VerifyError::Expired, "AccessDenied", 403),
            (VerifyError::NotYetValid, "AccessDenied", 403),
            (VerifyError::MissingDate, "AccessDenied", 403),
            (VerifyError::MissingV2QueryParameters, "AccessDenied", 403),
            (ONE_MECHANISM, "InvalidArgument", 400),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.status()), (code, status), "{e:?}");
            assert!(!e.message().is_empty());
        }
        assert_eq!(VerifyError::Expired.message(), "Request has expired");
        assert_eq!(
            VerifyError::Expired.to_string(),
            "AccessDenied: Request has expired"
        );
    }
}
