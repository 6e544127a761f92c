package vm_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/test/cases"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/acgs-lite/acgs/internal/vm"
)

var update = flag.Bool("update", false, "rewrite testdata/conformance.golden and the summary in docs/vm.md")

// opaDir is the OPA module's directory in the module cache.
func opaDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/open-policy-agent/opa").Output()
	if err != nil {
		t.Skipf("cannot locate the OPA module: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// outcome is what one evaluator made of a case: a canonical text of the
// result set, or an error (at preparation or evaluation).
type outcome struct {
	result     string
	prepareErr error
	evalErr    error
}

func (o outcome) failed() bool { return o.prepareErr != nil || o.evalErr != nil }

func (o outcome) String() string {
	switch {
	case o.prepareErr != nil:
		return "prepare error: " + o.prepareErr.Error()
	case o.evalErr != nil:
		return "eval error: " + o.evalErr.Error()
	}
	return o.result
}

// preparer prepares a case's query against store, the case's data.
type preparer func(ctx context.Context, tc cases.TestCase, store storage.Store) (rego.PreparedEvalQuery, error)

// runCase evaluates tc as prepare prepares it, with the case's data, input
// and strictness, as OPA's own conformance runner does.
func runCase(tc cases.TestCase, prepare preparer) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var store storage.Store
	if tc.Data != nil {
		store = inmem.NewFromObject(*tc.Data)
	} else {
		store = inmem.New()
	}
	var input ast.Value
	var err error
	if tc.InputTerm != nil {
		var t *ast.Term
		if t, err = ast.ParseTerm(*tc.InputTerm); err == nil {
			input = t.Value
		}
	} else if tc.Input != nil {
		input, err = ast.InterfaceToValue(*tc.Input)
	}
	if err != nil {
		return outcome{prepareErr: err}
	}
	pq, err := prepare(ctx, tc, store)
	if err != nil {
		return outcome{prepareErr: err}
	}
	var evalOpts []rego.EvalOption
	if input != nil {
		evalOpts = append(evalOpts, rego.EvalParsedInput(input))
	}
	rs, err := pq.Eval(ctx, evalOpts...)
	if err != nil {
		return outcome{evalErr: err}
	}
	return outcome{result: canonical(rs)}
}

// capabilities are the ones the case asks for (nil: OPA's defaults).
func capabilities(tc cases.TestCase) *ast.Capabilities {
	if tc.ExperimentalKeywords {
		return ast.CapabilitiesForThisVersion(ast.CapabilitiesExperimentalKeywords(true))
	}
	return nil
}

// prepareTopdown prepares tc for topdown as OPA's runner does: rego
// parses and compiles the modules.
func prepareTopdown(ctx context.Context, tc cases.TestCase, store storage.Store) (rego.PreparedEvalQuery, error) {
	opts := []func(*rego.Rego){
		rego.Query(tc.Query),
		rego.Store(store),
		rego.StrictBuiltinErrors(tc.StrictError),
		rego.SetRegoVersion(ast.RegoV1),
	}
	if caps := capabilities(tc); caps != nil {
		opts = append(opts, rego.Capabilities(caps))
	}
	for i, m := range tc.Modules {
		opts = append(opts, rego.Module(fmt.Sprintf("test-%d.rego", i), m))
	}
	return rego.New(opts...).PrepareForEval(ctx)
}

// prepareVM prepares tc as the engine prepares a path for the VM
// (snapshot.compiled): vm.Prepare on a compiled compiler, so the cases
// measure its refusals (indexed comprehensions, strict-mode risks) too, not
// only the plugin behind rego.Target. The compiler is built as rego builds
// topdown's, so that the evaluators differ only in what runs the query.
func prepareVM(ctx context.Context, tc cases.TestCase, store storage.Store) (rego.PreparedEvalQuery, error) {
	caps := capabilities(tc)
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps}
	mods := make(map[string]*ast.Module, len(tc.Modules))
	for i, src := range tc.Modules {
		name := fmt.Sprintf("test-%d.rego", i)
		m, err := ast.ParseModuleWithOpts(name, src, popts)
		if err != nil {
			return rego.PreparedEvalQuery{}, err
		}
		mods[name] = m
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	// As rego's (bundle.Activate): rules must not conflict with base documents.
	compiler := ast.NewCompiler().
		WithCapabilities(caps).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(false).
		WithUseTypeCheckAnnotations(true).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	compiler.Compile(mods)
	store.Abort(ctx, txn)
	if compiler.Failed() {
		return rego.PreparedEvalQuery{}, compiler.Errors
	}
	popts.SkipRules = true // as rego parses a query
	query, err := ast.ParseBodyWithOpts(tc.Query, popts)
	if err != nil {
		return rego.PreparedEvalQuery{}, err
	}
	return vm.Prepare(ctx, compiler, store, query, rego.StrictBuiltinErrors(tc.StrictError))
}

// canonical is a result set as sorted, de-duplicated JSON texts (numbers
// as printed: 1 and 1.0 differ). Rows are compared as a set, as OPA's
// conformance runner does: the plan collects results into a set.
func canonical(rs rego.ResultSet) string {
	rows := make([]string, 0, len(rs))
	for _, r := range rs {
		b, err := json.Marshal(map[string]any{"expressions": exprValues(r.Expressions), "bindings": r.Bindings})
		if err != nil {
			return "unencodable: " + err.Error()
		}
		rows = append(rows, string(b))
	}
	sort.Strings(rows)
	rows = slices.Compact(rows)
	return "[" + strings.Join(rows, ",") + "]"
}

func exprValues(es []*rego.ExpressionValue) []any {
	out := make([]any, len(es))
	for i, e := range es {
		out[i] = e.Value
	}
	return out
}

var (
	reLocation = regexp.MustCompile(`[\w./<>-]*:\d+(:\d+)?:? ?`)
	reAt       = regexp.MustCompile(` at [\w./<>-]*:\d+(:\d+)?`) // where in the case: not the reason
	reQuoted   = regexp.MustCompile(`"[^"]*"|\bg\d+\.data\.\S+|data\.[\w.\[\]"]+`)
	reSpace    = regexp.MustCompile(`\s+`)
)

// reason groups an unsupported case by why the VM refused it.
func reason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "unsupported: "); i >= 0 && errors.Is(err, vm.ErrUnsupported) {
		msg = "vm: " + msg[i+len("unsupported: "):]
	} else {
		// vm.Prepare wraps the planner's errors: this is the VM side's
		// compilation, which topdown's passed.
		msg = "compile: " + msg
	}
	msg = reAt.ReplaceAllString(msg, "")
	msg = reLocation.ReplaceAllString(msg, "")
	if strings.HasPrefix(msg, "vm: built-in ") {
		return msg // the built-in's name is the reason
	}
	msg = reQuoted.ReplaceAllString(msg, "…")
	msg = reSpace.ReplaceAllString(msg, " ")
	if len(msg) > 110 {
		msg = msg[:110] + "…"
	}
	return strings.TrimSpace(msg)
}

// shortErr is an error's message without locations, cut to a line.
func shortErr(err error) string {
	msg := reSpace.ReplaceAllString(reLocation.ReplaceAllString(err.Error(), ""), " ")
	if len(msg) > 110 {
		msg = msg[:110] + "…"
	}
	return msg
}

type caseResult struct {
	note       string
	file       string
	kind       string // pass, both-error, compile-error, unsupported, fail
	reason     string
	td, vmOut  outcome
	tdDuration time.Duration
}

// TestConformance runs every case of OPA's conformance suite on topdown and
// on the VM, the VM's prepared by vm.Prepare as the engine prepares it. A
// case the VM prepares must give exactly topdown's result (or an error where
// topdown errors); a case the VM refuses is counted as unsupported, with why. The counts must equal testdata/conformance.golden,
// whose summary docs/vm.md must quote (go test -run TestConformance -update
// rewrites both).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite skipped in -short mode")
	}
	dir := filepath.Join(opaDir(t), "v1", "test", "cases", "testdata", "v1")
	set, err := cases.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	all := set.Sorted().Cases
	results := make([]caseResult, len(all))
	var wg sync.WaitGroup
	work := make(chan int)
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = classify(all[i], dir)
			}
		}()
	}
	for i := range all {
		work <- i
	}
	close(work)
	wg.Wait()

	counts := map[string]int{}
	reasons := map[string][]string{}
	var noCompile []string
	for _, r := range results {
		counts[r.kind]++
		switch r.kind {
		case "compile-error":
			noCompile = append(noCompile, r.note+": "+shortErr(r.td.prepareErr))
		case "fail":
			t.Errorf("%s (%s): VM differs from topdown\ntopdown: %s\nvm:      %s", r.note, r.file, r.td, r.vmOut)
		case "unsupported":
			reasons[r.reason] = append(reasons[r.reason], r.note)
		}
	}
	summary := formatSummary(len(all), counts, reasons)
	golden := filepath.Join("testdata", "conformance.golden")
	full := summary + "\n" + formatCases(reasons) + "\nCases that do not compile (on either evaluator):\n  " + strings.Join(noCompile, "\n  ") + "\n"
	if *update {
		if err := os.WriteFile(golden, []byte(full), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := updateDoc(summary); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(want) != full {
		t.Errorf("conformance results differ from %s (rerun with -update if the change is intended):\n%s", golden, summary)
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), summaryBlock(summary)) {
		t.Errorf("%s does not quote the conformance summary (rerun with -update):\n%s", docPath, summary)
	}
	t.Logf("\n%s", summary)
}

func classify(tc cases.TestCase, dir string) caseResult {
	r := caseResult{note: tc.Note, file: strings.TrimPrefix(tc.Filename, dir+string(filepath.Separator))}
	start := time.Now()
	r.td = runCase(tc, prepareTopdown)
	r.tdDuration = time.Since(start)
	r.vmOut = runCase(tc, prepareVM)
	switch {
	case r.td.prepareErr != nil && r.vmOut.prepareErr != nil:
		r.kind = "compile-error" // neither evaluator gets to run: the policy does not compile
	case r.td.prepareErr != nil:
		r.kind = "fail"
	case r.vmOut.prepareErr != nil:
		r.kind = "unsupported"
		r.reason = reason(r.vmOut.prepareErr)
	case errors.Is(r.vmOut.evalErr, vm.ErrUnsupported):
		// Refused at evaluation: a strict-mode risk (Prepare's strictRisk)
		// is known only once the evaluation says it is strict.
		r.kind = "unsupported"
		r.reason = reason(r.vmOut.evalErr)
	case !r.td.failed() && handedOver(r.vmOut.evalErr):
		// The VM stopped where it cannot tell topdown's answer (equal
		// values written otherwise met); the engine answers with topdown.
		r.kind = "unsupported"
		r.reason = "handed to topdown at evaluation: " + reason(r.vmOut.evalErr)
	case r.td.failed() && r.vmOut.failed():
		// Messages may differ; the kind of error may not.
		if errorCode(r.td) != errorCode(r.vmOut) {
			r.kind = "fail"
		} else {
			r.kind = "both-error"
		}
	case r.td.failed() != r.vmOut.failed() || r.td.result != r.vmOut.result:
		r.kind = "fail"
	default:
		r.kind = "pass"
	}
	return r
}

// handedOver says whether err is the VM's own internal error ("vm: …"),
// which the engine answers by evaluating with topdown.
func handedOver(err error) bool {
	var te *topdown.Error
	return errors.As(err, &te) && te.Code == topdown.InternalErr && strings.HasPrefix(te.Message, "vm: ")
}

// errorCode is the topdown error code of a failed outcome ("rego_..." for
// errors rego reports from compilation, "other" for the rest).
func errorCode(o outcome) string {
	err := o.evalErr
	if err == nil {
		err = o.prepareErr
	}
	var te *topdown.Error
	if errors.As(err, &te) {
		return te.Code
	}
	if i := strings.Index(err.Error(), "rego_"); i >= 0 {
		return strings.Fields(err.Error()[i:])[0]
	}
	return "other"
}

func formatSummary(total int, counts map[string]int, reasons map[string][]string) string {
	var b strings.Builder
	ran := counts["pass"] + counts["both-error"]
	runnable := total - counts["compile-error"]
	fmt.Fprintf(&b, "OPA v1 conformance cases: %d\n", total)
	fmt.Fprintf(&b, "  same result on the VM as on topdown:   %d\n", counts["pass"])
	fmt.Fprintf(&b, "  same error code on the VM as topdown:  %d\n", counts["both-error"])
	fmt.Fprintf(&b, "  unsupported (prepared for topdown):    %d\n", counts["unsupported"])
	fmt.Fprintf(&b, "  policy or query does not compile:      %d\n", counts["compile-error"])
	fmt.Fprintf(&b, "  different result (must be 0):          %d\n", counts["fail"])
	fmt.Fprintf(&b, "  run on the VM: %d of %d compiling cases (%.1f%%)\n", ran, runnable, 100*float64(ran)/float64(max(runnable, 1)))
	if len(reasons) > 0 {
		b.WriteString("Unsupported, by reason:\n")
		keys := make([]string, 0, len(reasons))
		for k := range reasons {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if len(reasons[keys[i]]) != len(reasons[keys[j]]) {
				return len(reasons[keys[i]]) > len(reasons[keys[j]])
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			fmt.Fprintf(&b, "  %4d  %s\n", len(reasons[k]), k)
		}
	}
	return b.String()
}

func formatCases(reasons map[string][]string) string {
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("Unsupported cases:\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s\n", k)
		for _, n := range reasons[k] {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	return b.String()
}

var docPath = filepath.Join("..", "..", "docs", "vm.md")

const (
	beginMark = "<!-- conformance summary: written by go test ./internal/vm -run TestConformance -update -->"
	endMark   = "<!-- end of conformance summary -->"
)

func summaryBlock(summary string) string {
	return beginMark + "\n```\n" + summary + "```\n" + endMark
}

// updateDoc replaces the summary block of docs/vm.md.
func updateDoc(summary string) error {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	s := string(doc)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no conformance summary markers", docPath)
	}
	s = s[:i] + summaryBlock(summary) + s[j+len(endMark):]
	return os.WriteFile(docPath, []byte(s), 0o644)
}
