// Package inputgen generates random constitution inputs for differential
// tests: every request type and action class, with fields missing, wrongly
// typed and on their boundaries, and tool calls. Actions and tool names are
// also respelled as the constitution's name key (acgs.text.key) folds them
// (case, whitespace, separators and invisible characters), so that the
// evaluators are compared on the normaliser too. It is deterministic for a
// seed, and its values are what encoding/json with UseNumber produces
// (json.Number, not float64), so they are exactly what the server hands
// the engine.
package inputgen

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Hash is the default constitutional hash.
const Hash = "cdd01ef066bc6cf2"

// Prohibited are the constitution's prohibited actions.
var Prohibited = []string{
	"system.execute_shell", "network.bypass_firewall", "auth.escalate_privileges", "file.delete_system",
	"file.write_system", "network.raw_socket", "process.spawn_root", "process.spawn_child",
	"memory.access_kernel", "system.modify_configuration", "crypto.break_encryption", "data.exfiltrate",
}

// NeedsExplanation are the actions that need an explanation of 50+ characters.
var NeedsExplanation = []string{
	"decision.make_automated", "data.process_personal", "policy.update_rules", "user.recommend_action", "system.modify_behavior",
}

// Ordinary are actions of every rate-limit category and of none.
var Ordinary = []string{
	"data.read_public", "data.read", "data.write", "network.http_get", "network.dns_lookup", "system.status",
	"compute.analyze", "compute.train", "report.generate", "report.export", "file.read", "ui.render", "nodot", "", ".leading", "data.",
}

// Types are the request types, including unknown ones.
var Types = []string{"constitutional_evaluation", "action_authorization", "evolution_approval", "data_access", "unknown_kind", ""}

// Gen produces inputs.
type Gen struct {
	r *rand.Rand
	// s draws the respellings and the tool calls: a stream of its own, so
	// that everything r draws (and so every input that is not respelled or
	// made a tool call) is what the seed gave before they were added.
	s *rand.Rand
}

// New returns a generator for a seed.
func New(seed uint64) *Gen {
	return &Gen{
		r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		s: rand.New(rand.NewPCG(seed^0x2545f4914f6cdd1d, seed+0x632be59bd9b4e019)),
	}
}

func (g *Gen) chance(p float64) bool { return g.r.Float64() < p }

func (g *Gen) pick(ss []string) string { return ss[g.r.IntN(len(ss))] }

// num returns a JSON number as encoding/json.UseNumber would decode it.
func num(f float64) json.Number { return json.Number(strconv.FormatFloat(f, 'f', -1, 64)) }

// score draws a value in [0,1] with the boundaries over-represented.
func (g *Gen) score() json.Number {
	switch g.r.IntN(6) {
	case 0:
		return num(0)
	case 1:
		return num(1)
	case 2:
		return num([]float64{0.2, 0.3, 0.5, 0.8, 0.9, 0.95, 0.79, 0.81}[g.r.IntN(8)])
	default:
		return num(float64(g.r.IntN(1001)) / 1000)
	}
}

// wrong returns a value of a random wrong-ish type.
func (g *Gen) wrong() any {
	switch g.r.IntN(7) {
	case 0:
		return "0.9"
	case 1:
		return "true"
	case 2:
		return nil
	case 3:
		return []any{num(1), "x"}
	case 4:
		return map[string]any{"v": num(1)}
	case 5:
		return true
	default:
		return num(-1)
	}
}

// maybe returns v, a wrong-typed value, or omits the field (ok=false).
func (g *Gen) maybe(v any) (any, bool) {
	switch g.r.IntN(20) {
	case 0:
		return nil, false
	case 1:
		return g.wrong(), true
	default:
		return v, true
	}
}

func (g *Gen) set(m map[string]any, k string, v any) {
	if v, ok := g.maybe(v); ok {
		m[k] = v
	}
}

// Action draws an action from every class, respelled one time in four.
func (g *Gen) Action() string {
	var a string
	switch g.r.IntN(4) {
	case 0:
		a = g.pick(Prohibited)
	case 1:
		a = g.pick(NeedsExplanation)
	default:
		a = g.pick(Ordinary)
	}
	if a != "" && g.s.IntN(4) == 0 {
		a = g.Respell(a)
	}
	return a
}

// Input returns one random ACGS request (the policy input).
func (g *Gen) Input() map[string]any {
	in := map[string]any{}
	g.set(in, "type", g.pick(Types))
	switch {
	case g.chance(0.85):
		in["constitutional_hash"] = Hash
	case g.chance(0.5):
		in["constitutional_hash"] = "0000000000000000"
	default:
		g.set(in, "constitutional_hash", Hash)
	}
	g.set(in, "action", g.Action())
	if g.chance(0.9) {
		g.set(in, "context", g.Context())
	}
	if g.chance(0.5) || in["type"] == "evolution_approval" {
		g.set(in, "evolution_request", g.Evolution())
	}
	if g.chance(0.5) || in["type"] == "data_access" {
		g.set(in, "data_request", g.DataRequest())
	}
	if g.chance(0.05) {
		in["extra_field"] = g.wrong()
	}
	if g.s.IntN(16) == 0 {
		if g.s.IntN(8) > 0 {
			in["type"] = "tool_call"
		}
		in["tool_call"] = g.ToolCall()
	}
	return in
}

// Context is the context of a constitutional evaluation.
func (g *Gen) Context() map[string]any {
	env := map[string]any{}
	g.set(env, "sandbox_enabled", g.chance(0.8))
	g.set(env, "audit_enabled", g.chance(0.8))
	res := map[string]any{}
	// A slice, not a map: map order would make the inputs differ between
	// runs for the same seed.
	limits := []struct {
		k   string
		lim float64
	}{
		{"cpu_cores", 2}, {"memory_gb", 4}, {"disk_gb", 10}, {"network_bandwidth_mbps", 10},
		{"max_execution_time_seconds", 300}, {"max_file_operations_per_minute", 100}, {"max_network_requests_per_minute", 50},
	}
	for _, l := range limits {
		k, lim := l.k, l.lim
		if g.chance(0.3) {
			var v float64
			switch g.r.IntN(4) {
			case 0:
				v = lim
			case 1:
				v = lim * 2
			case 2:
				v = 0
			default:
				v = float64(g.r.IntN(int(lim*3) + 1))
			}
			g.set(res, k, num(v))
		}
	}
	agent := map[string]any{"id": fmt.Sprintf("agent-%d", g.r.IntN(50))}
	g.set(agent, "trust_level", g.score())
	g.set(agent, "requested_resources", res)
	c := map[string]any{}
	g.set(c, "agent", agent)
	g.set(c, "environment", env)
	if g.chance(0.8) {
		g.set(c, "responsible_party", g.pick([]string{"ops_team", "", "load_test_user"}))
	}
	if g.chance(0.7) {
		g.set(c, "explanation", g.pick([]string{"short", "Safe public data access for dashboard", "This explanation is deliberately longer than fifty characters in total."}))
	}
	for _, k := range []string{"user_consent", "overrides_user_preference", "affects_protected_groups"} {
		if g.chance(0.3) {
			g.set(c, k, g.chance(0.5))
		}
	}
	for _, k := range []string{"benefit_assessment", "harm_risk_assessment", "fairness_assessment"} {
		if g.chance(0.4) {
			g.set(c, k, g.score())
		}
	}
	if g.chance(0.4) {
		g.set(c, "current_usage_count", num(float64([]int{0, 9, 10, 19, 20, 49, 50, 99, 100, 199, 200, 500}[g.r.IntN(12)])))
	}
	return c
}

// Evolution is an evolution_request.
func (g *Gen) Evolution() map[string]any {
	e := map[string]any{"id": fmt.Sprintf("evo-%d", g.r.IntN(50))}
	g.set(e, "type", g.pick([]string{"minor_update", "patch", "configuration", "feature_addition", "major_update", "architecture_change", "other"}))
	if g.chance(0.9) {
		e["constitutional_hash"] = Hash
	} else {
		g.set(e, "constitutional_hash", "ffffffffffffffff")
	}
	ch := map[string]any{}
	if g.chance(0.3) {
		g.set(ch, "external_dependencies", []any{"lib"})
	} else if g.chance(0.5) {
		g.set(ch, "external_dependencies", []any{})
	}
	for _, k := range []string{"privilege_escalation", "network_changes", "experimental_features", "logging_disabled", "audit_disabled", "data_encryption_weakened", "security_changes"} {
		if g.chance(0.25) {
			g.set(ch, k, g.chance(0.5))
		}
	}
	g.set(e, "changes", ch)
	mit := map[string]any{}
	for _, k := range []string{"sandbox_deployment", "gradual_rollout", "enhanced_monitoring"} {
		if g.chance(0.4) {
			g.set(mit, k, g.chance(0.6))
		}
	}
	g.set(e, "mitigations", mit)
	pa := map[string]any{}
	for _, k := range []string{"complexity_delta", "memory_delta", "latency_delta", "resource_delta"} {
		if g.chance(0.8) {
			g.set(pa, k, num(float64(g.r.IntN(81)-20)/100))
		}
	}
	g.set(e, "performance_analysis", pa)
	if g.chance(0.8) {
		rp := map[string]any{}
		for _, k := range []string{"procedure", "verification", "timeline", "dependencies"} {
			if g.chance(0.7) {
				g.set(rp, k, g.pick([]string{"", "documented"}))
			}
		}
		g.set(rp, "tested", g.chance(0.6))
		g.set(rp, "automated", g.chance(0.6))
		g.set(e, "rollback_plan", rp)
	}
	for _, k := range []string{"human_approved", "security_review_passed", "peer_reviewed"} {
		if g.chance(0.5) {
			g.set(e, k, g.chance(0.6))
		}
	}
	return e
}

// DataRequest is a data_request.
func (g *Gen) DataRequest() map[string]any {
	cats := []string{"analytics", "personal_identifiable_information", "financial_information", "health_records", "biometric_data", "authentication_credentials", "cryptographic_keys", "trade_secrets", "legal_documents", "public"}
	n := g.r.IntN(13)
	fields := make([]any, 0, n)
	names := []any{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%d", i)
		f := map[string]any{"name": name}
		g.set(f, "category", g.pick(cats))
		g.set(f, "classification_level", num(float64(g.r.IntN(5))))
		g.set(f, "purpose_relevance", g.score())
		if g.chance(0.05) {
			fields = append(fields, g.wrong())
			continue
		}
		fields = append(fields, f)
		if g.chance(0.8) {
			names = append(names, name)
		}
	}
	d := map[string]any{}
	g.set(d, "data_fields", fields)
	g.set(d, "requester_clearance_level", num(float64(g.r.IntN(5))))
	g.set(d, "special_authorization", g.chance(0.5))
	purposes := []string{"service_improvement", "security_monitoring", "marketing"}
	if g.chance(0.85) {
		g.set(d, "purpose", g.pick(purposes))
	}
	g.set(d, "allowed_purposes", []any{"service_improvement", "security_monitoring"})
	g.set(d, "justified_fields", names)
	subjects := []any{}
	records := []any{}
	for i := 0; i < g.r.IntN(4); i++ {
		id := fmt.Sprintf("user-%d", i)
		subjects = append(subjects, id)
		if g.chance(0.8) {
			rec := map[string]any{"subject_id": id}
			g.set(rec, "status", g.pick([]string{"granted", "granted", "revoked"}))
			g.set(rec, "allowed_purposes", []any{g.pick(purposes)})
			g.set(rec, "expiry_time", num(float64([]int{1764201599, 1764201600, 1764201601, 4102444800}[g.r.IntN(4)])))
			records = append(records, rec)
		}
	}
	g.set(d, "data_subjects", subjects)
	g.set(d, "consent_records", records)
	if g.chance(0.9) {
		g.set(d, "timestamp", num(1764201600))
	}
	if g.chance(0.7) {
		rp := map[string]any{}
		for _, c := range cats[1:5] {
			if g.chance(0.5) {
				g.set(rp, c, num(float64([]int{86400, 2592000, 2592001, 31536000, 315360000, 400000000}[g.r.IntN(6)])))
			}
		}
		g.set(d, "retention_policy", rp)
	}
	if g.chance(0.7) {
		g.set(d, "encryption_config", map[string]any{"encrypted_fields": names})
	}
	g.set(d, "record_count", num(float64([]int{10, 1000, 1001, 50000}[g.r.IntN(4)])))
	g.set(d, "automated_request", g.chance(0.3))
	return d
}

// Folded are the characters the constitution's name key (acgs.text.key)
// removes from a name, by kind: whitespace, the separators of Unicode's Z
// categories, format characters (zero-width, soft hyphen, bidi, a tag),
// controls, combining marks (the combining grapheme joiner, variation
// selectors, an accent) and the blank fillers. A name with any of them,
// or in another case, has the key of the name without them.
var Folded = []string{
	" ", "\t", "\n", "\r", "\v", "\f",
	"\u00a0", "\u2002", "\u2009", "\u202f", "\u205f", "\u3000", "\u2028", "\u2029",
	"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\U000e0041",
	"\u0000", "\u001f", "\u0085",
	"\u034f", "\ufe0f", "\U000e0100", "\u0301",
	"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800",
}

// Respell returns name spelled otherwise with the same key: its case
// changed, folded characters (see Folded) around it or inside it, or
// both. Drawn from the generator's own stream for respellings.
func (g *Gen) Respell(name string) string {
	out := []rune(name)
	kinds := 1 + g.s.IntN(7) // bit 0: case, 1: around, 2: inside
	if kinds&1 != 0 {
		switch g.s.IntN(3) {
		case 0:
			out = []rune(strings.ToUpper(string(out)))
		case 1: // each segment capitalised: Data.Read_Public
			up := true
			for i, c := range out {
				if up {
					out[i] = unicode.ToUpper(c)
				}
				up = c == '.' || c == '_'
			}
		default:
			for i, c := range out {
				if g.s.IntN(2) == 0 {
					out[i] = unicode.ToUpper(c)
				}
			}
		}
	}
	if kinds&4 != 0 && len(out) > 1 {
		for n := 1 + g.s.IntN(2); n > 0; n-- {
			at := 1 + g.s.IntN(len(out)-1)
			ins := []rune(Folded[g.s.IntN(len(Folded))])
			out = append(out[:at], append(ins, out[at:]...)...)
		}
	}
	if kinds&2 != 0 {
		before, after := Folded[g.s.IntN(len(Folded))], Folded[g.s.IntN(len(Folded))]
		switch g.s.IntN(3) {
		case 0:
			out = []rune(before + string(out))
		case 1:
			out = []rune(string(out) + after)
		default:
			out = []rune(before + string(out) + after)
		}
	}
	return string(out)
}

// ToolUpstreams are the upstreams of generated tool calls.
var ToolUpstreams = []string{"files", "shell", "db", "mail", "notes"}

// Tools are the tools of generated tool calls: ones the bundle prohibits
// (by *__exec, *__bash, ...), ones that need approval (*__delete_*, ...)
// and ordinary ones.
var Tools = []string{
	"exec", "bash", "execute_command", "run_shell", "spawn_process",
	"delete_record", "drop_table", "send_email", "transfer_funds", "deploy_service",
	"read_file", "echo", "list_dir", "query",
}

// ToolCall is a tool call (input.tool_call) as the gateway sends it: a
// name respelled one time in two, arguments of each kind the argument
// rules read, an agent and a call count around the default limit; fields
// missing or wrongly typed now and then. Drawn from the generator's own
// stream for tool calls.
func (g *Gen) ToolCall() map[string]any {
	s := g.s
	up, tool := ToolUpstreams[s.IntN(len(ToolUpstreams))], Tools[s.IntN(len(Tools))]
	name := up + "__" + tool
	if s.IntN(2) == 0 {
		name = g.Respell(name)
	}
	call := map[string]any{"name": name, "tool": tool, "upstream": up}
	args := map[string]any{}
	for n := s.IntN(3); n > 0; n-- {
		switch s.IntN(5) {
		case 0:
			args["path"] = []string{"/workspace/a.txt", "/etc/passwd", "notes.txt"}[s.IntN(3)]
		case 1:
			args["url"] = []string{"https://example.com/x", "http://evil.test/"}[s.IntN(2)]
		case 2:
			args["command"] = "ls -la"
		case 3:
			args["text"] = []string{"hello", "a; rm -rf /", "AKIAIOSFODNN7EXAMPLE"}[s.IntN(3)]
		default:
			args["n"] = num(float64(s.IntN(10)))
		}
	}
	call["arguments"] = args
	agent := map[string]any{"id": fmt.Sprintf("agent-%d", s.IntN(5)), "session": fmt.Sprintf("s-%d", s.IntN(3))}
	call["agent"] = agent
	call["context"] = map[string]any{"calls_last_minute": num(float64([]int{0, 1, 119, 120, 500}[s.IntN(5)]))}
	switch s.IntN(16) {
	case 0:
		delete(call, "name")
	case 1:
		call["arguments"] = "not an object"
	case 2:
		delete(agent, "id")
	case 3:
		call["context"] = map[string]any{"calls_last_minute": "5"}
	case 4:
		call["upstream"] = num(7)
	}
	return call
}

// Inputs returns n inputs.
func (g *Gen) Inputs(n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = g.Input()
	}
	return out
}

// NoiseKeys are the fields WithNoise adds: what real agent traffic carries
// beside the fields a constitution reads (ids, timestamps, free-form
// metadata). None of them is a field the constitution names.
var NoiseKeys = []string{"request_id", "trace_id", "session_id", "client_sent_at", "agent_metadata"}

// WithNoise returns a deep copy of in with noise fields added at every
// object level (never replacing a field that is there): a never-repeated
// request id at the top, and random ids, timestamps and nested metadata
// objects below. A seed gives the same noise every time.
func (g *Gen) WithNoise(in map[string]any) map[string]any {
	out, _ := g.noise(in, 0).(map[string]any)
	out["request_id"] = fmt.Sprintf("req-%016x", g.r.Uint64())
	return out
}

func (g *Gen) noise(v any, depth int) any {
	switch x := v.(type) {
	case map[string]any:
		// Keys in order: the noise of each field takes random numbers, so
		// Go's random map order would make a seed's noise differ run to run.
		m := make(map[string]any, len(x)+2)
		for _, k := range slices.Sorted(maps.Keys(x)) {
			m[k] = g.noise(x[k], depth+1)
		}
		for n := g.r.IntN(3); n > 0; n-- {
			k := g.pick(NoiseKeys)
			if _, taken := m[k]; !taken {
				m[k] = g.noiseValue(depth)
			}
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = g.noise(e, depth+1)
		}
		return a
	default:
		return v
	}
}

func (g *Gen) noiseValue(depth int) any {
	switch g.r.IntN(4) {
	case 0:
		return fmt.Sprintf("%016x", g.r.Uint64())
	case 1:
		return num(float64(1_700_000_000_000 + g.r.IntN(1_000_000_000)))
	case 2:
		if depth < 4 {
			return map[string]any{"source": g.pick([]string{"sdk", "cli", "gateway"}), "seq": num(float64(g.r.IntN(1 << 20))), "tags": []any{"a", fmt.Sprint(g.r.IntN(100))}}
		}
		return nil
	default:
		return []any{num(float64(g.r.IntN(1000))), g.r.IntN(2) == 0}
	}
}

// WithRequestNoise returns a deep copy of in with what agents add to a
// request beside the fields a constitution names: a never-repeated request
// id and a trace id at the top, and ids, timestamps and metadata in the
// objects the spec defines field by field (context, its agent and
// environment, evolution_request, data_request). Unlike WithNoise it leaves
// the maps and lists the spec reads whole (requested resources, changes,
// data fields) as they are.
func (g *Gen) WithRequestNoise(in map[string]any) map[string]any {
	out, _ := DeepCopy(in).(map[string]any)
	out["request_id"] = fmt.Sprintf("req-%016x", g.r.Uint64())
	out["trace_id"] = fmt.Sprintf("%032x", g.r.Uint64())
	for _, path := range [][]string{{"context"}, {"context", "agent"}, {"context", "environment"}, {"evolution_request"}, {"data_request"}} {
		var v any = out
		for _, k := range path {
			if m, ok := v.(map[string]any); ok {
				v = m[k]
			} else {
				v = nil
			}
		}
		if m, ok := v.(map[string]any); ok {
			for _, k := range NoiseKeys {
				if _, taken := m[k]; !taken && g.chance(0.5) {
					m[k] = g.noiseValue(2)
				}
			}
		}
	}
	return out
}

// DeepCopy copies decoded JSON (maps and slices; scalars are shared).
func DeepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = DeepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = DeepCopy(e)
		}
		return a
	default:
		return v
	}
}
