package storage

import (
	"errors"
	"strings"

	"github.com/aws/smithy-go"
	"gocloud.dev/gcerrors"
)

// S3 error codes that the same request would get again however long one
// waits: a person has to change the bucket, the keys or the URL first. In
// the advice, {flag} is the flag that gave the URL.
var permanentS3 = map[string]string{
	"NoSuchBucket":       "create the bucket, or correct the bucket in {flag}",
	"AccessDenied":       "grant the coordinator's keys write access to the bucket",
	"AllAccessDisabled":  "grant the coordinator's keys write access to the bucket",
	"AccountProblem":     "the storage account needs attention before it takes writes",
	"InvalidAccessKeyId": "set the coordinator's AWS_ACCESS_KEY_ID to a key the server knows",
	// versitygw's answer (404) to an access key it has no user for.
	"XAdminUserNotFound":           "set the coordinator's AWS_ACCESS_KEY_ID to a key the server knows",
	"SignatureDoesNotMatch":        "set the coordinator's AWS_SECRET_ACCESS_KEY to the secret of its AWS_ACCESS_KEY_ID",
	"InvalidBucketName":            "correct the bucket name in {flag}",
	"AuthorizationHeaderMalformed": "correct the region in {flag} (?region=) to the bucket's",
	"PermanentRedirect":            "correct the region or endpoint in {flag} to the bucket's",
	"InvalidToken":                 "renew the coordinator's AWS_SESSION_TOKEN",
	"ExpiredToken":                 "renew the coordinator's AWS_SESSION_TOKEN",
}

// S3 error codes that say "later": the server is busy or briefly broken.
// They win over gcerrors' mapping, which may call some of them otherwise.
var transientS3 = map[string]bool{
	"SlowDown": true, "InternalError": true, "ServiceUnavailable": true, "RequestTimeout": true,
	"RequestTimeTooSkewed": true, "Throttling": true, "ThrottlingException": true, "OperationAborted": true,
}

// Permanent reports whether err from this package means that trying the
// same again cannot succeed until a person changes something (the bucket
// is missing, the keys are wrong or not allowed, the URL is wrong), so a
// caller that retries should stop and say so. Server trouble (5xx,
// SlowDown), a refused or cut connection, a timeout and anything unknown
// are not permanent: they are worth retrying.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		if transientS3[code] {
			return false
		}
		if _, ok := permanentS3[code]; ok {
			return true
		}
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound, gcerrors.PermissionDenied, gcerrors.InvalidArgument, gcerrors.FailedPrecondition:
		return true
	}
	return false
}

// Hint says what a person can do about a permanent error with the URL
// flag gave ("--out", "--storage"), or "" when it has no advice beyond the
// error itself.
func Hint(err error, flag string) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if h, ok := permanentS3[ae.ErrorCode()]; ok {
			return strings.ReplaceAll(h, "{flag}", flag)
		}
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return "create the bucket or folder, or correct " + flag
	case gcerrors.PermissionDenied:
		return "give the coordinator's credentials write access there"
	case gcerrors.InvalidArgument, gcerrors.FailedPrecondition:
		return "correct " + flag
	}
	return ""
}

// Answer is the storage server's own words about err, for messages: its
// error code and message ("NoSuchBucket: The specified bucket does not
// exist"), or the error's text when the server gave none.
func Answer(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg := strings.TrimSpace(ae.ErrorMessage())
		if msg == "" {
			return ae.ErrorCode()
		}
		return ae.ErrorCode() + ": " + msg
	}
	return err.Error()
}
