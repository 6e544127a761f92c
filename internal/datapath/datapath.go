// Package datapath converts between the API's document paths
// ("acgs/main/decision") and references into data, as OPA's server reads
// them. The engine, the plans and the CLI name documents by path; one
// conversion keeps them naming the same document.
package datapath

import (
	"errors"
	"net/url"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/acgs-lite/acgs/internal/apierror"
)

// Parse turns an API path ("acgs/main/decision", "" for the whole
// document) into a data reference, refusing empty segments. A segment that
// is an integer is a number, as OPA's server reads it: x/arr/1 is
// data.x.arr[1], the second element of an array. A segment's escapes are
// undone (Segment makes them), as OPA's server unescapes each segment of
// a request's path: x/a%2Fb is data.x["a/b"], one key holding a slash; a
// % that begins no escape is itself.
func Parse(path string) (ast.Ref, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	path = strings.Trim(path, "/")
	if path == "" {
		return ref, nil
	}
	for _, seg := range strings.Split(path, "/") {
		if strings.Contains(seg, "%") {
			if u, err := url.PathUnescape(seg); err == nil {
				seg = u
			}
		}
		if i, ok := util.Atoi64(seg); ok {
			ref = append(ref, ast.InternedTerm(i))
		} else {
			ref = append(ref, ast.StringTerm(seg))
		}
	}
	return ref, nil
}

// Check is Parse's refusal without the reference: a request's path is
// checked on every request, and parsed only when its query is prepared.
func Check(path string) error {
	if strings.Contains(strings.Trim(path, "/"), "//") {
		return apierror.New(apierror.InvalidParameter, "invalid path %q: empty segment", strings.Trim(path, "/"))
	}
	return nil
}

// Segment is the path segment that names the key: the key with its % and
// / escaped (%25, %2F), so that a key holding a slash is one segment, not
// two, and one holding an escape's text is not unescaped by Parse.
func Segment(key string) string {
	if !strings.ContainsAny(key, "%/") {
		return key
	}
	return strings.ReplaceAll(strings.ReplaceAll(key, "%", "%25"), "/", "%2F")
}

// ErrNoPath is returned by Of for a reference no path names.
var ErrNoPath = errors.New("no API path names this reference")

// Of returns the API path of a data reference (data.a.b is a/b): Parse's
// inverse, each string key written as Segment writes it (data.a["b/c"]
// is a/b%2Fc). A reference with a computed part, a number that is not an
// integer, or a string that is empty or that Parse would read as a number
// ("1") has no path.
func Of(ref ast.Ref) (string, error) {
	if len(ref) == 0 || !ref[0].Equal(ast.DefaultRootDocument) {
		return "", ErrNoPath
	}
	parts := make([]string, 0, len(ref)-1)
	for _, t := range ref[1:] {
		switch v := t.Value.(type) {
		case ast.String:
			s := string(v)
			if _, isInt := util.Atoi64(s); isInt || s == "" {
				return "", ErrNoPath
			}
			parts = append(parts, Segment(s))
		case ast.Number:
			i, ok := v.Int64()
			if !ok {
				return "", ErrNoPath
			}
			parts = append(parts, strconv.FormatInt(i, 10))
		default:
			return "", ErrNoPath
		}
	}
	return strings.Join(parts, "/"), nil
}
