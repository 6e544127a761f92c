package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/gateway"
	"github.com/acgs-lite/acgs/internal/telemetry"
	"github.com/acgs-lite/acgs/internal/telemetry/telemetrytest"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

const (
	promDir       = "prometheus"
	rulesFile     = "prometheus/alerts.yml"
	rulesTestFile = "prometheus/alerts_test.yml"
	dashboardsDir = "grafana/dashboards"
)

// promtool runs promtool with args in dir and fails the test on a non-zero
// exit, showing what promtool said.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "promtool", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestPromtoolCheckConfig checks every Prometheus configuration of
// deploy/prometheus (prometheus*.yml), from that directory as the files
// name their rule files relative to it.
func TestPromtoolCheckConfig(t *testing.T) {
	configs, err := filepath.Glob(filepath.Join(promDir, "prometheus*.yml"))
	if err != nil || len(configs) == 0 {
		t.Fatalf("no prometheus*.yml in %s (%v)", promDir, err)
	}
	for _, c := range configs {
		t.Run(filepath.Base(c), func(t *testing.T) {
			promtool(t, promDir, "check", "config", filepath.Base(c))
		})
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	out := promtool(t, ".", "check", "rules", rulesFile)
	if strings.Contains(strings.ToLower(out), "warning") {
		t.Errorf("promtool check rules warns:\n%s", out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	promtool(t, ".", "test", "rules", rulesTestFile)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// promExpr is one PromQL expression found in a deploy file.
type promExpr struct {
	where string // file and position, for messages
	expr  string
}

func ruleExprs(t *testing.T) []promExpr {
	var out []promExpr
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, promExpr{fmt.Sprintf("%s %s/%s%s", rulesFile, g.Name, r.Record, r.Alert), r.Expr})
		}
	}
	return out
}

// grafanaVar matches the Grafana variables the dashboards use: the interval
// macros and ${name} / $name template variables.
var (
	grafanaInterval = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)
	grafanaVar      = regexp.MustCompile(`\$\{\w+\}|\$\w+`)
)

// substituteGrafana turns a dashboard query into plain PromQL: interval
// macros become 5m, template variables a match-all regex (they only appear
// inside =~ matchers).
func substituteGrafana(s string) string {
	s = grafanaInterval.ReplaceAllString(s, "5m")
	return grafanaVar.ReplaceAllString(s, ".*")
}

// dashboardExprs walks a dashboard and returns every "expr" string: panel
// targets (also in nested rows) and annotation queries.
func dashboardExprs(t *testing.T) []promExpr {
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s (%v)", dashboardsDir, err)
	}
	var out []promExpr
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch c := v.(type) {
			case map[string]any:
				for k, x := range c {
					if s, ok := x.(string); ok && k == "expr" {
						out = append(out, promExpr{f + " " + path, s})
						continue
					}
					walk(path+"."+k, x)
				}
			case []any:
				for i, x := range c {
					walk(fmt.Sprintf("%s[%d]", path, i), x)
				}
			}
		}
		walk("", v)
	}
	return out
}

func parseAll(t *testing.T, exprs []promExpr) map[string]parser.Expr {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	out := map[string]parser.Expr{}
	for _, e := range exprs {
		if strings.TrimSpace(e.expr) == "" {
			t.Errorf("%s: empty expression", e.where)
			continue
		}
		x, err := p.ParseExpr(substituteGrafana(e.expr))
		if err != nil {
			t.Errorf("%s: %v\n%s", e.where, err, e.expr)
			continue
		}
		out[e.where] = x
	}
	return out
}

// TestPromQLParses parses every expression of the rules and dashboards with
// Prometheus' own parser.
func TestPromQLParses(t *testing.T) {
	rules := ruleExprs(t)
	dash := dashboardExprs(t)
	if len(rules) < 10 || len(dash) < 30 {
		t.Fatalf("found %d rule and %d dashboard expressions; the walk is missing some", len(rules), len(dash))
	}
	parseAll(t, append(rules, dash...))
}

// exposedNames returns the sample names the service exposes after seeing
// every kind of observation (histograms contribute _bucket, _sum, _count).
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	m := telemetry.NewMetrics(telemetry.BuildInfo{Version: "test"})
	telemetrytest.Exercise(t, m)
	gateway.RegisterExampleSeries(m.Registry()) // acgs gateway's series (the dashboard's gateway row)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, mf := range fams {
		names[name] = true
		if mf.GetType().String() == "HISTOGRAM" || mf.GetType().String() == "SUMMARY" {
			names[name+"_sum"] = true
			names[name+"_count"] = true
			names[name+"_bucket"] = true
		}
	}
	return names
}

// TestReferencedMetricsExist checks that every metric a rule or a panel
// selects is one the service exposes, a rule recorded in alerts.yml, or one
// Prometheus makes itself (up, ALERTS). A renamed metric then breaks this
// test instead of silently emptying a panel or disarming an alert.
func TestReferencedMetricsExist(t *testing.T) {
	exposed := exposedNames(t)
	recorded := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	builtin := map[string]bool{"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true}
	used := map[string]bool{}
	for where, x := range parseAll(t, append(ruleExprs(t), dashboardExprs(t)...)) {
		parser.Inspect(x, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			if name == "" {
				t.Errorf("%s: selector %s has no metric name", where, vs)
				return nil
			}
			used[name] = true
			switch {
			case builtin[name]:
			case strings.Contains(name, ":"):
				if !recorded[name] {
					t.Errorf("%s: %s is not recorded by any rule of %s", where, name, rulesFile)
				}
			case !exposed[name]:
				t.Errorf("%s: %s is not exposed by the service", where, name)
			}
			return nil
		})
	}
	for _, want := range []string{"acgs_http_request_duration_seconds_bucket", "acgs_cache_l2_up", "acgs_policy_info"} {
		if !used[want] {
			t.Errorf("%s is used nowhere; the expression walk is missing something", want)
		}
	}
}

// TestEveryAlertIsTested checks that alerts_test.yml shows each alert both
// firing and silent.
func TestEveryAlertIsTested(t *testing.T) {
	b, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	firing, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	var alerts int
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !firing[r.Alert] || !silent[r.Alert] {
				t.Errorf("alert %s: tested firing %v, not firing %v; want both", r.Alert, firing[r.Alert], silent[r.Alert])
			}
		}
	}
	if alerts < 5 {
		t.Errorf("only %d alerts found", alerts)
	}
}

// TestDashboardStructure checks what Grafana would otherwise only show when
// the dashboard is opened: panel ids unique, panels inside the 24-column
// grid, every query bound to the provisioned Prometheus through the
// datasource variable, whose default is the provisioned datasource's uid.
func TestDashboardStructure(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
		} `yaml:"datasources"`
	}
	b, err := os.ReadFile("grafana/provisioning/datasources/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("datasource provisioning: %v %+v", err, ds)
	}
	uid := ds.Datasources[0].UID

	var prov struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err = os.ReadFile("grafana/provisioning/dashboards/acgs.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prov); err != nil || len(prov.Providers) == 0 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path == "" {
		t.Fatalf("dashboard provisioning: %v %+v", err, prov)
	}

	type panel struct {
		ID         int            `json:"id"`
		Type       string         `json:"type"`
		Title      string         `json:"title"`
		Datasource map[string]any `json:"datasource"`
		GridPos    struct{ H, W, X, Y int }
		Targets    []struct {
			Expr       string         `json:"expr"`
			Datasource map[string]any `json:"datasource"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name    string `json:"name"`
				Type    string `json:"type"`
				Current struct {
					Value any `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, err = os.ReadFile(filepath.Join(dashboardsDir, "acgs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard needs a uid and a title")
	}
	var dsVarOK bool
	for _, v := range dash.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Current.Value == uid {
			dsVarOK = true
		}
	}
	if !dsVarOK {
		t.Errorf("no datasource variable defaulting to the provisioned uid %q", uid)
	}
	ids := map[int]string{}
	var queries int
	for _, p := range dash.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q outside the grid: %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d (%q): needs a title and queries", p.ID, p.Title)
		}
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource["uid"] != "${datasource}" {
				t.Errorf("panel %q: a query's datasource is %v", p.Title, tg.Datasource)
			}
		}
	}
	if queries < 30 {
		t.Errorf("only %d queries in the dashboard", queries)
	}
}

// TestPrometheusScrapesService runs the real Prometheus against a live
// /metrics handler of the service (a registry that has seen everything) with
// the real alerts.yml: the exposition must scrape cleanly, every recording
// and alerting rule must evaluate without error on real series, and the
// recorded SLO series must appear.
func TestPrometheusScrapesService(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server")
	}
	m := telemetry.NewMetrics(telemetry.BuildInfo{Version: "itest"})
	telemetrytest.Exercise(t, m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	api := telemetrytest.StartPrometheus(t, []string{target}, rulesFile)

	const wait = 60 * time.Second
	got := telemetrytest.WaitQuery(t, api, `acgs_build_info{version="itest"}`, wait)
	if got[0].Metric["instance"] != target || got[0].Metric["job"] != "acgs" {
		t.Errorf("acgs_build_info labels = %v", got[0].Metric)
	}
	if v := telemetrytest.WaitQuery(t, api, `acgs_cache_l2_up`, wait); v[0].Value != 1 {
		t.Errorf("acgs_cache_l2_up = %v, want 1", v[0].Value)
	}
	// Rates need two scrapes; the counters stand still, so the rates are 0
	// and the ratios NaN or 0 — what matters is that the series exist.
	for _, expr := range []string{
		"job:acgs_http_requests:rate5m",
		"job:acgs_http_errors:ratio_rate5m",
		"job:acgs_http_request_duration_seconds:p99_rate5m",
		"job:acgs_cache_hit:ratio_rate5m",
		"acgs:target_http_p99_latency_seconds",
	} {
		telemetrytest.WaitQuery(t, api, expr, wait)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var targets struct {
		Data struct {
			ActiveTargets []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
				ScrapeURL string `json:"scrapeUrl"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	getJSON(ctx, t, api+"/api/v1/targets", &targets)
	if len(targets.Data.ActiveTargets) != 1 || targets.Data.ActiveTargets[0].Health != "up" || targets.Data.ActiveTargets[0].LastError != "" {
		t.Errorf("scrape target: %+v", targets.Data.ActiveTargets)
	}

	var rules struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name           string  `json:"name"`
					Health         string  `json:"health"`
					LastError      string  `json:"lastError"`
					LastEvaluation string  `json:"lastEvaluation"`
					EvaluationTime float64 `json:"evaluationTime"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	// A rule's health is "unknown" until its group first runs; wait for all.
	for {
		getJSON(ctx, t, api+"/api/v1/rules", &rules)
		unknown := 0
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				if r.Health == "unknown" {
					unknown++
				}
			}
		}
		if unknown == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d rules never evaluated", unknown)
		case <-time.After(200 * time.Millisecond):
		}
	}
	var n int
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s/%s: health %q error %q", g.Name, r.Name, r.Health, r.LastError)
			}
		}
	}
	if want := len(ruleExprs(t)); n != want {
		t.Errorf("Prometheus loaded %d rules, alerts.yml has %d", n, want)
	}
}

func getJSON(ctx context.Context, t *testing.T, u string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", u, err)
	}
}
