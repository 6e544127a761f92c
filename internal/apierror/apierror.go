// Package apierror is the one error type of the service: a code from the API
// contract, a message for people, and optional details. Every layer returns
// it, and one writer in the server maps it to an HTTP status and OPA's error
// body, so a code is never paired with the wrong status.
package apierror

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is an error code of the API contract (shared/spec/api.md).
type Code string

// The codes of the API contract.
const (
	InvalidParameter           Code = "invalid_parameter"
	ConstitutionalHashMismatch Code = "constitutional_hash_mismatch"
	RequestTooLarge            Code = "request_too_large"
	UnsupportedMediaType       Code = "unsupported_media_type"
	Unauthorized               Code = "unauthorized"
	ResourceNotFound           Code = "resource_not_found"
	UndefinedDocument          Code = "undefined_document"
	MethodNotAllowed           Code = "method_not_allowed"
	EvaluationError            Code = "evaluation_error"
	InternalError              Code = "internal_error"
	Unavailable                Code = "unavailable"
	// Overloaded: no evaluation slot was free in time. Not a decision: the
	// client should retry after the response's Retry-After.
	Overloaded Code = "overloaded"
)

// Status is the HTTP status of a code.
func (c Code) Status() int {
	switch c {
	case InvalidParameter, ConstitutionalHashMismatch:
		return http.StatusBadRequest
	case RequestTooLarge:
		return http.StatusRequestEntityTooLarge
	case UnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case Unauthorized:
		return http.StatusUnauthorized
	case ResourceNotFound, UndefinedDocument:
		return http.StatusNotFound
	case MethodNotAllowed:
		return http.StatusMethodNotAllowed
	case Unavailable, Overloaded:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Detail is one entry of the optional "errors" list of OPA's error body.
type Detail struct {
	Code     string    `json:"code"`
	Message  string    `json:"message"`
	Location *Location `json:"location,omitempty"`
}

// Location points into a policy file.
type Location struct {
	File string `json:"file"`
	Row  int    `json:"row"`
	Col  int    `json:"col"`
}

// Error is the service's error: it marshals to OPA's error body.
type Error struct {
	Code    Code     `json:"code"`
	Message string   `json:"message"`
	Errors  []Detail `json:"errors,omitempty"`
	cause   error
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// New returns an error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with a message and a cause kept for errors.Is/As.
func Wrap(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), cause: cause}
}

// As returns err as an *Error, turning any other error into internal_error.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: InternalError, Message: "internal error", cause: err}
}

// CodeOf returns the code of err, internal_error for foreign errors.
func CodeOf(err error) Code { return As(err).Code }
