package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fuzzChainLines is the number of records of the intact log the splice
// fuzzer inserts into.
const fuzzChainLines = 8

// intactChainLog is a chained log written by the package's own writer, with
// fixed ids and times so that it is the same in every run (seeds below link
// to its lines). Every line differs from every other (the event's i).
func intactChainLog(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	l, err := NewDecisionLog(DecisionLogConfig{Writer: &buf, Chain: true, Mask: []string{"/tool_call/arguments/password"}})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range fuzzChainLines {
		l.Log(&DecisionEvent{
			DecisionID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Path:       "acgs/main/decision",
			Input:      map[string]any{"type": "tool_call", "i": i, "tool_call": map[string]any{"arguments": map[string]any{"password": "hunter2"}}},
			Result:     map[string]any{"allow": i%2 == 0, "outcome": "allow"},
			Timestamp:  time.Date(2026, 1, 2, 3, 4, 5, i, time.UTC),
			CacheTier:  "none",
		})
	}
	if err := l.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if n := bytes.Count(buf.Bytes(), []byte{'\n'}); n != fuzzChainLines {
		tb.Fatalf("intact log has %d lines, want %d", n, fuzzChainLines)
	}
	return buf.Bytes()
}

// refLines splits data into the lines VerifyChain reads: each ends at a
// newline (not included); a last line without one is torn. No bufio, no
// streaming: the whole input at once.
func refLines(data []byte) (lines [][]byte, torn bool) {
	if len(data) == 0 {
		return nil, false
	}
	lines = bytes.Split(data, []byte{'\n'})
	if len(lines[len(lines)-1]) == 0 {
		return lines[:len(lines)-1], false
	}
	return lines, true
}

// checkChainReport checks rep, VerifyChain's report for data, against a
// reference verifier over refLines: the record count, the head, and the
// exact set of lines with a problem (a line has one when it is not a JSON
// object with a prev_hash equal to the hash of the line before it, or From
// for the first, or when it is a torn last line; the last line also has one
// when the head is not o.Head).
func checkChainReport(t *testing.T, data []byte, o VerifyChainOptions, rep ChainReport) {
	t.Helper()
	lines, torn := refLines(data)
	if rep.Records != len(lines) {
		t.Fatalf("records %d, want %d lines", rep.Records, len(lines))
	}
	want := o.From
	if want == "" {
		want = ChainGenesis
	}
	bad := map[int]bool{}
	for i, ln := range lines {
		prev, ok := refPrevHash(ln)
		ok = ok && prev == want
		if !ok {
			bad[i+1] = true
		}
		want = LineHash(ln)
	}
	if torn {
		bad[len(lines)] = true
	}
	if rep.Head != want {
		t.Fatalf("head %s, want %s", rep.Head, want)
	}
	headBad := o.Head != "" && want != o.Head
	got := map[int]bool{}
	last := 0
	for _, p := range rep.Problems {
		if p.Line < last {
			t.Fatalf("problems out of line order: %+v", rep.Problems)
		}
		last = p.Line
		// Line 0 is only the head check of a log with no records.
		headOnly := p.Line == 0 && rep.Records == 0 && headBad
		if (p.Line < 1 || p.Line > rep.Records) && !headOnly {
			t.Fatalf("problem at line %d of %d: %+v", p.Line, rep.Records, p)
		}
		if p.Reason == "" {
			t.Fatalf("problem without a reason: %+v", p)
		}
		got[p.Line] = true
	}
	if headBad {
		bad[len(lines)] = true
	}
	for l := range bad {
		if !got[l] {
			t.Fatalf("line %d is broken but not reported: %+v", l, rep.Problems)
		}
	}
	for l := range got {
		if !bad[l] {
			t.Fatalf("line %d reported but its link holds: %+v", l, rep.Problems)
		}
	}
	if rep.OK() != (len(bad) == 0) {
		t.Fatalf("OK %v with broken lines %v", rep.OK(), bad)
	}
}

// refPrevHash reads the prev_hash of a line the way decoding it into a
// struct with a *string prev_hash field does: the line must be one JSON
// object; of its keys, the last that matches prev_hash (case-insensitively,
// as encoding/json matches field names) decides, null leaving none. ok is
// false for anything that is not a record with a string prev_hash.
func refPrevHash(line []byte) (prev string, ok bool) {
	if !json.Valid(line) {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	var have bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", false
		}
		if !strings.EqualFold(key, "prev_hash") {
			continue
		}
		if string(raw) == "null" {
			have = false
			continue
		}
		if err := json.Unmarshal(raw, &prev); err != nil {
			return "", false // a prev_hash that is not a string
		}
		have = true
	}
	return prev, have
}

// FuzzVerifyChain: VerifyChain on any bytes (a damaged or hostile log
// handed to acgs audit verify) never fails nor panics on an in-memory
// reader, and agrees with a whole-input reference verifier on the record
// count, the head and the exact lines reported.
func FuzzVerifyChain(f *testing.F) {
	intact := intactChainLog(f)
	lines, _ := refLines(intact)
	head := LineHash(lines[len(lines)-1])
	f.Add(intact, "", "")
	f.Add(intact, "", head)
	f.Add(intact, "", ChainGenesis)
	f.Add(bytes.Join(append([][]byte{}, lines[1:]...), []byte("\n")), LineHash(lines[0]), head)
	f.Add(intact[:len(intact)-1], "", "")
	f.Add(intact[:len(intact)/2], "", head)
	f.Add([]byte(""), "", "")
	f.Add([]byte(""), "sha256:abc", "sha256:def")
	f.Add([]byte("\n\n"), "", "")
	f.Add([]byte(`{"prev_hash":"`+ChainGenesis+`"}`+"\n"), "", "")
	f.Add([]byte(`{"PREV_HASH":"`+ChainGenesis+`","prev_hash":null}`+"\n"), "", "")
	f.Add([]byte(`{"prev_hash":"x","prev_hash":"`+ChainGenesis+`"}`), "", "")
	f.Add([]byte("not json\n[1]\nnull\n\"s\"\n"), "", "")
	f.Add([]byte(`{"prev_hash":1}`+"\n"+` {"prev_hash":"`+ChainGenesis+"\"}\r\n"), "", "")
	f.Fuzz(func(t *testing.T, data []byte, from, head string) {
		o := VerifyChainOptions{From: from, Head: head}
		rep, err := VerifyChain(bytes.NewReader(data), o)
		if err != nil {
			t.Fatalf("in-memory log: %v", err)
		}
		checkChainReport(t, data, o, rep)
	})
}

// FuzzVerifyChainSplice inserts the fuzzed bytes x at a line boundary of
// an intact log written by the package's writer. Besides the reference
// check of FuzzVerifyChain:
//
//   - the records before the insertion point and those more than one line
//     after the inserted lines keep their links: problems are only at lines
//     k+1 .. k+c+2 (k lines before x, c newlines in x), or at the last line
//     for the expected head;
//   - given the head of the intact log, the result verifies only when x is
//     empty. More generally a result that verifies (with or without the
//     head) and ends at the intact log's head is the intact log: by the
//     links, its last line is the intact last line, the line before that
//     the intact one before it, and so on back to the first, whose
//     prev_hash (genesis) is no line's hash. Anything else would take a
//     SHA-256 collision.
func FuzzVerifyChainSplice(f *testing.F) {
	intact := intactChainLog(f)
	lines, _ := refLines(intact)
	n := len(lines)
	head := LineHash(lines[n-1])
	offsets := make([]int, n+1) // offsets[k]: where line k+1 starts
	for i, ln := range lines {
		offsets[i+1] = offsets[i] + len(ln) + 1
	}
	cont := func(prev string) []byte {
		return []byte(`{"decision_id":"x","path":"p","prev_hash":"` + prev + `"}` + "\n")
	}
	f.Add([]byte{}, uint8(0), true)
	f.Add([]byte{}, uint8(n), false)
	f.Add([]byte("\n"), uint8(3), true)
	f.Add([]byte(" "), uint8(n-1), false)
	f.Add([]byte(" "), uint8(n-1), true)
	f.Add([]byte("{}\n"), uint8(2), false)
	f.Add(append(append([]byte{}, lines[3]...), '\n'), uint8(4), false)
	f.Add(append(append([]byte{}, lines[n-1]...), '\n'), uint8(n), true)
	f.Add(cont(head), uint8(n), false)
	f.Add(cont(head), uint8(n), true)
	f.Add(cont(LineHash(lines[2])), uint8(3), false)
	f.Add(cont(ChainGenesis), uint8(0), false)
	f.Add(cont(head)[:20], uint8(n), false)
	f.Add(bytes.Join([][]byte{lines[5], lines[6], lines[7]}, []byte("\n")), uint8(5), false)
	f.Fuzz(func(t *testing.T, x []byte, at uint8, withHead bool) {
		k := int(at) % (n + 1)
		data := make([]byte, 0, len(intact)+len(x))
		data = append(data, intact[:offsets[k]]...)
		data = append(data, x...)
		data = append(data, intact[offsets[k]:]...)
		var o VerifyChainOptions
		if withHead {
			o.Head = head
		}
		rep, err := VerifyChain(bytes.NewReader(data), o)
		if err != nil {
			t.Fatal(err)
		}
		checkChainReport(t, data, o, rep)
		c := bytes.Count(x, []byte{'\n'})
		for _, p := range rep.Problems {
			headCheck := withHead && p.Line == rep.Records && rep.Head != head
			if (p.Line <= k || p.Line > k+c+2) && !headCheck {
				t.Fatalf("x %q at %d: problem at line %d, outside lines %d..%d: %+v", x, k, p.Line, k+1, k+c+2, rep.Problems)
			}
		}
		if withHead && rep.OK() != (len(x) == 0) {
			t.Fatalf("x %q at %d: OK %v against the intact head: %+v", x, k, rep.OK(), rep)
		}
		if rep.OK() && rep.Head == head && !bytes.Equal(data, intact) {
			t.Fatalf("x %q at %d: a changed log verifies and ends at the intact head", x, k)
		}
	})
}

// maskRefValid is RFC 6901 pointer syntax, written from the grammar
// (json-pointer = *( "/" reference-token ); a token is unescaped chars and
// "~0" / "~1" escapes), without the parser's replace-and-check.
func maskRefValid(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' {
			if i+1 >= len(p) || (p[i+1] != '0' && p[i+1] != '1') {
				return false
			}
			i++
		}
	}
	return true
}

// maskRefUnescape unescapes one token by scanning it.
func maskRefUnescape(t string) string {
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] == '~' && i+1 < len(t) {
			if t[i+1] == '1' {
				b.WriteByte('/')
			} else {
				b.WriteByte('~')
			}
			i++
			continue
		}
		b.WriteByte(t[i])
	}
	return b.String()
}

// canonicalIndex is an RFC 6901 array index: 0, or digits without a
// leading zero.
func canonicalIndex(s string) (int, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

// FuzzMaskPointer: parseMaskPointer (the DECISION_LOG_MASK and gateway
// decision_log_mask values) accepts exactly the RFC 6901 pointers it does
// not refuse by rule (the whole input, the result), unescapes their tokens
// as the RFC says, and the erased form it logs (/input + raw) parses back
// to the same pointer. Masking a document where the pointer leads to a
// value erases exactly that value, leaves the original untouched, and
// reads a token as an array index only in its canonical form.
func FuzzMaskPointer(f *testing.F) {
	for _, p := range []string{
		"/tool_call/arguments/password", "/input/tool_call/arguments/content", "/context/agent/id",
		"", "/", "/input", "/input/", "/input/input", "/inputx/a", "/result", "/result/reasons", "/input/result/x",
		"/a~1b/c~0d", "/a~2b", "/~~01", "/a~", "/~01", "/list/0", "/list/3/secret", "/list/03", "/list/+1", "/list/-0",
		"tool_call", "//", "/a//b",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		mp, err := parseMaskPointer(p)
		if (err == nil) != (CheckMaskPointer(p) == nil) {
			t.Fatalf("%q: parseMaskPointer and CheckMaskPointer disagree", p)
		}
		refused := p == "" || p == "/input" || p == "/result" || strings.HasPrefix(p, "/result/")
		wantOK := maskRefValid(p) && !refused
		if (err == nil) != wantOK {
			t.Fatalf("%q: error %v, want accepted=%v", p, err, wantOK)
		}
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(p)) {
				t.Fatalf("%q: the error does not name the pointer: %v", p, err)
			}
			return
		}
		rel := p
		if strings.HasPrefix(p, "/input/") {
			rel = p[len("/input"):]
		}
		if mp.raw != rel {
			t.Fatalf("%q: raw %q, want %q", p, mp.raw, rel)
		}
		toks := strings.Split(rel[1:], "/")
		if len(mp.segs) != len(toks) {
			t.Fatalf("%q: segs %q", p, mp.segs)
		}
		for i, tok := range toks {
			if mp.segs[i] != maskRefUnescape(tok) {
				t.Fatalf("%q: token %q unescaped to %q, want %q", p, tok, mp.segs[i], maskRefUnescape(tok))
			}
		}
		again, err := parseMaskPointer("/input" + mp.raw)
		if err != nil || again.raw != mp.raw || strings.Join(again.segs, "\x00") != strings.Join(mp.segs, "\x00") {
			t.Fatalf("%q: the erased form /input%s parses to %+v, %v", p, mp.raw, again, err)
		}

		// A document with a value where the pointer leads: an object
		// per token, or an array of 4 where a token reads as an index
		// below 4 (canonical or not).
		build := func() any {
			var v any = "masked-value"
			for i := len(mp.segs) - 1; i >= 0; i-- {
				s := mp.segs[i]
				if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < 4 {
					arr := []any{"a0", "a1", "a2", "a3"}
					arr[n] = v
					v = arr
				} else {
					v = map[string]any{s: v, sibling(s): "kept"}
				}
			}
			return v
		}
		doc, orig := build(), build()
		out, erased := maskInput(doc, []maskPointer{mp})
		if !jsonEqual(doc, orig) {
			t.Fatalf("%q: masking changed the original", p)
		}
		canonical := true
		for _, s := range mp.segs {
			if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < 4 {
				if _, ok := canonicalIndex(s); !ok {
					canonical = false
				}
			}
		}
		if !canonical {
			// A non-canonical index (+1, -0, 01) names no element.
			if len(erased) != 0 || !jsonEqual(out, orig) {
				t.Fatalf("%q: a non-canonical array index erased %v", p, erased)
			}
			return
		}
		if len(erased) != 1 || erased[0] != "/input"+mp.raw {
			t.Fatalf("%q: erased %v, want [/input%s]", p, erased, mp.raw)
		}
		// Walk out along the pointer: the value is gone (a key removed,
		// an element set to null), and a sibling is kept.
		v := out
		for i, s := range mp.segs {
			last := i == len(mp.segs)-1
			switch c := v.(type) {
			case map[string]any:
				if c[sibling(s)] != "kept" {
					t.Fatalf("%q: a sibling was removed", p)
				}
				if last {
					if _, ok := c[s]; ok {
						t.Fatalf("%q: %q still there", p, s)
					}
				}
				v = c[s]
			case []any:
				n, _ := strconv.Atoi(s)
				if last && c[n] != nil {
					t.Fatalf("%q: element %d not erased", p, n)
				}
				v = c[n]
			default:
				t.Fatalf("%q: %T on the path", p, v)
			}
		}
	})
}

// sibling is a key beside s in the masked document.
func sibling(s string) string {
	if s == "other" {
		return "another"
	}
	return "other"
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
