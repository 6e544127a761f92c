package deploy

// Checks of the fleet deployment files (issue 7): the Dockerfile, both
// compose files, nginx, the Kubernetes manifests and deploy.sh. Docker and
// Kubernetes do not run here, so each file is checked by the real tool that
// can run (nginx -t and a live nginx, promtool, OPA's own configuration
// parser) or decoded strictly into the types of the tool that reads it
// (compose-go, k8s.io/api): an unknown or misspelt field fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/remote"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

const (
	nginxConf    = "nginx/nginx.conf"
	k8sDir       = "k8s"
	composeFile  = "docker-compose.yml"
	composeProd  = "docker-compose.prod.yml"
	dockerfile   = "Dockerfile"
	deployScript = "deploy.sh"
)

// testNginxConf rewrites the lines of deploy/nginx/nginx.conf marked
// "cluster.sh:" for a private prefix: upstream on loopback, listen port,
// pid and logs in dir. It returns the path of the written file.
func testNginxConf(t *testing.T, dir string, upstreams []string, listen string) string {
	t.Helper()
	src, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(src), "\n") {
		_, marker, ok := strings.Cut(line, "# cluster.sh: ")
		if !ok {
			out = append(out, line)
			continue
		}
		seen[marker] = true
		indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
		switch marker {
		case "pid":
			out = append(out, indent+"pid "+filepath.Join(dir, "nginx.pid")+";")
		case "error_log":
			out = append(out, indent+"error_log "+filepath.Join(dir, "error.log")+" warn;")
		case "access_log":
			out = append(out, indent+"access_log "+filepath.Join(dir, "access.log")+" acgs;")
		case "upstream servers":
			for _, u := range upstreams {
				out = append(out, indent+"server "+u+" max_fails=3 fail_timeout=5s;")
			}
		case "listen":
			out = append(out, indent+"listen "+listen+";")
		default:
			t.Fatalf("%s: unknown cluster.sh marker %q", nginxConf, marker)
		}
	}
	for _, m := range []string{"pid", "error_log", "access_log", "upstream servers", "listen"} {
		if !seen[m] {
			t.Fatalf("%s: no line marked \"# cluster.sh: %s\" (scripts/cluster.sh rewrites it)", nginxConf, m)
		}
	}
	p := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNginxConfig runs `nginx -t` on the configuration, checks the proxy
// settings the fleet depends on, then runs nginx for real in front of an
// instance: a decision goes through, the request id is passed on, and the
// answer is marked uncacheable.
func TestNginxConfig(t *testing.T) {
	bin := testenv.RequireBinary(t, "nginx", "nginx")
	raw, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, want := range []string{
		"keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`,
		"proxy_cache off;", `add_header Cache-Control "no-store" always;`,
		"proxy_set_header X-Request-Id", "location ~ ^/(health|health/live|health/ready)$",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("%s lacks %q", nginxConf, want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*proxy_cache_path`).MatchString(text) {
		t.Errorf("%s defines a proxy cache: decisions must not be cached by the proxy", nginxConf)
	}

	inst := servicetest.Start(t, func(c *config.Config) { c.Policy.PartialEval = false }) // plans are beside the point here
	dir := t.TempDir()
	port := testenv.FreePort(t)
	conf := testNginxConf(t, dir, []string{strings.TrimPrefix(inst.URL, "http://")}, "127.0.0.1:"+strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "-t", "-e", "stderr", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf, "-g", "daemon off;")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := testenv.WaitTCP(addr, 10*time.Second); err != nil {
		t.Fatalf("nginx did not listen: %v\n%s", err, stderr.String())
	}
	safe, err := os.ReadFile(filepath.Join("..", "testdata", "requests", "safe.json"))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		code               int
		noStore            bool
	}{
		{"decision", http.MethodPost, "/v1/data/acgs/main/decision", safe, 200, true},
		{"readiness", http.MethodGet, "/health/ready", nil, 200, false},
		{"liveness", http.MethodGet, "/health/live", nil, 200, false},
		{"proxy health", http.MethodGet, "/nginx/health", nil, 200, false},
		{"pprof hidden", http.MethodGet, "/debug/pprof/", nil, 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, bytes.NewReader(tc.body))
			req.Header.Set("X-Request-Id", "nginx-test-"+strings.ReplaceAll(tc.name, " ", "-"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			if tc.noStore && resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
			}
			if tc.path != "/nginx/health" && tc.code == 200 && resp.Header.Get("X-Request-Id") != req.Header.Get("X-Request-Id") {
				t.Errorf("X-Request-Id %q came back, want %q (passed to the instance)", resp.Header.Get("X-Request-Id"), req.Header.Get("X-Request-Id"))
			}
		})
	}
}

// TestPromtoolCheckProdConfig checks the DNS-discovery Prometheus config of
// the 3-replica compose file.
func TestPromtoolCheckProdConfig(t *testing.T) {
	bin := testenv.RequireBinary(t, "promtool", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "check", "config", "prometheus-prod.yml")
	cmd.Dir = "prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check config prometheus-prod.yml: %v\n%s", err, out)
	}
}

// k8sKinds maps apiVersion/kind to the typed struct a manifest must decode
// into without unknown fields.
var k8sKinds = map[string]func() any{
	"v1/Namespace":                           func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
}

// kustomization is the subset of kustomize's Kustomization this directory
// uses, decoded strictly too.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

func strictJSON(data []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// splitYAML returns the documents of a multi-document YAML file.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	flush := func() {
		if strings.TrimSpace(cur.String()) != "" {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(sc.Text() + "\n")
	}
	flush()
	return docs
}

// TestKubernetesManifestsStrict decodes every manifest of deploy/k8s into
// its k8s.io/api type with unknown fields refused, then checks how they fit
// together: the kustomization lists exactly the files, selectors match the
// pod labels, probes hit the health endpoints, the pod runs non-root on a
// read-only root, and the ConfigMap's OPA configuration parses with OPA's
// own parser and is the file CONFIG_FILE names.
func TestKubernetesManifestsStrict(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", k8sDir, err)
	}
	objs := map[string]any{} // kind → object (one of each here)
	var kust kustomization
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(raw) {
			js, err := sigsyaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s document %d: not YAML: %v", f, i+1, err)
			}
			var tm struct{ APIVersion, Kind string }
			if err := json.Unmarshal(js, &tm); err != nil {
				t.Fatal(err)
			}
			if tm.Kind == "Kustomization" {
				if err := strictJSON(js, &kust); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				continue
			}
			mk, ok := k8sKinds[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Fatalf("%s document %d: %s/%s has no typed check here; add it to k8sKinds", f, i+1, tm.APIVersion, tm.Kind)
			}
			obj := mk()
			if err := strictJSON(js, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i+1, tm.Kind, err)
			}
			if _, dup := objs[tm.Kind]; dup {
				t.Fatalf("two %s manifests", tm.Kind)
			}
			objs[tm.Kind] = obj
		}
	}

	t.Run("kustomization lists every manifest", func(t *testing.T) {
		var want []string
		for _, f := range files {
			if b := filepath.Base(f); b != "kustomization.yaml" {
				want = append(want, b)
			}
		}
		got := slices.Clone(kust.Resources)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("resources %v, want the files %v", got, want)
		}
		if kust.Namespace != objs["Namespace"].(*corev1.Namespace).Name {
			t.Errorf("kustomization namespace %q differs from the Namespace manifest", kust.Namespace)
		}
	})

	dep := objs["Deployment"].(*appsv1.Deployment)
	podLabels := dep.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	c := dep.Spec.Template.Spec.Containers[0]

	t.Run("deployment", func(t *testing.T) {
		if !matches(dep.Spec.Selector.MatchLabels) {
			t.Errorf("selector %v does not match the pod labels %v", dep.Spec.Selector.MatchLabels, podLabels)
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 3 {
			t.Errorf("replicas %v, want at least 3", dep.Spec.Replicas)
		}
		probe := func(name string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
				t.Errorf("%s probe %+v, want GET %s", name, p, path)
			}
		}
		probe("liveness", c.LivenessProbe, "/health/live")
		probe("readiness", c.ReadinessProbe, "/health/ready")
		for res, want := range map[corev1.ResourceName][2]string{
			corev1.ResourceCPU: {"500m", "1"}, corev1.ResourceMemory: {"300Mi", "500Mi"},
		} {
			req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
			if req.String() != want[0] || lim.String() != want[1] {
				t.Errorf("%s request/limit %s/%s, want %s/%s", res, req.String(), lim.String(), want[0], want[1])
			}
		}
		psc, sc := dep.Spec.Template.Spec.SecurityContext, c.SecurityContext
		switch {
		case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0:
			t.Error("pod does not run as a non-root user")
		case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Error("container root file system is not read-only")
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Error("container allows privilege escalation")
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
			t.Error("container keeps its capabilities")
		}
		if tg := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= config.Default().Server.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %v is not longer than SHUTDOWN_TIMEOUT", tg)
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["http"] != 8004 {
			t.Errorf("container port http = %d, want 8004", ports["http"])
		}
	})

	t.Run("service, autoscaler and disruption budget target the pods", func(t *testing.T) {
		svc := objs["Service"].(*corev1.Service)
		if !matches(svc.Spec.Selector) {
			t.Errorf("service selector %v does not match the pods", svc.Spec.Selector)
		}
		if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].TargetPort.String() != "http" {
			t.Errorf("service ports %+v, want targetPort http", svc.Spec.Ports)
		}
		hpa := objs["HorizontalPodAutoscaler"].(*autoscalingv2.HorizontalPodAutoscaler)
		if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != dep.Name || ref.APIVersion != "apps/v1" {
			t.Errorf("autoscaler targets %+v, want Deployment %s", ref, dep.Name)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 3 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
			t.Errorf("autoscaler replicas %v..%d", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		pdb := objs["PodDisruptionBudget"].(*policyv1.PodDisruptionBudget)
		if pdb.Spec.Selector == nil || !matches(pdb.Spec.Selector.MatchLabels) {
			t.Errorf("disruption budget selector does not match the pods")
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() >= int(*dep.Spec.Replicas) {
			t.Errorf("minAvailable %v leaves no room for a voluntary disruption of %d replicas", pdb.Spec.MinAvailable, *dep.Spec.Replicas)
		}
		np := objs["NetworkPolicy"].(*networkingv1.NetworkPolicy)
		if !matches(np.Spec.PodSelector.MatchLabels) {
			t.Errorf("network policy selects %v, not the pods", np.Spec.PodSelector.MatchLabels)
		}
	})

	t.Run("configmap holds a valid OPA configuration, mounted as CONFIG_FILE", func(t *testing.T) {
		cm := objs["ConfigMap"].(*corev1.ConfigMap)
		var configFile string
		for _, e := range c.Env {
			if e.Name == "CONFIG_FILE" {
				configFile = e.Value
			}
		}
		var mountPath string
		for _, m := range c.VolumeMounts {
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name {
					mountPath = m.MountPath
				}
			}
		}
		if mountPath == "" || filepath.Dir(configFile) != mountPath {
			t.Fatalf("CONFIG_FILE %q is not in the ConfigMap's mount %q", configFile, mountPath)
		}
		opaConfig, ok := cm.Data[filepath.Base(configFile)]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %s", cm.Name, filepath.Base(configFile))
		}
		e, err := engine.New(context.Background(), nil, engine.Options{ConstitutionalHash: config.DefaultConstitutionalHash})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := remote.New(remote.Options{Config: []byte(opaConfig), Name: "configmap " + cm.Name, Target: e}); err != nil {
			t.Fatalf("OPA refuses the ConfigMap's configuration: %v", err)
		}
		if !strings.Contains(opaConfig, "signing:") {
			t.Error("the OPA configuration does not require signed bundles")
		}
	})
}

// loadCompose parses a compose file with compose-go (interpolation, schema
// validation, normalisation) under env.
func loadCompose(t *testing.T, file string, env map[string]string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: env,
	}) // the project name is the file's own "name:"
}

var composeEnv = map[string]string{
	"REDIS_PASSWORD":         "test-redis-password",
	"CACHE_SIGNING_KEY":      strings.Repeat("0123456789abcdef", 4),
	"ADMIN_TOKEN":            "test-admin-token",
	"GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}

// TestComposeFiles parses both compose files with compose-go, checks that
// everything they name on disk exists (build context, Dockerfile, mounted
// configuration), that Redis requires its password and acgs uses it, and
// that the fleet has 3 replicas with the original limits.
func TestComposeFiles(t *testing.T) {
	for _, tc := range []struct {
		file      string
		services  []string
		replicas  int
		publishes map[string]uint32 // service → published port
	}{
		{composeFile, []string{"acgs", "redis", "prometheus", "grafana"}, 1, map[string]uint32{"acgs": 8004, "prometheus": 9090, "grafana": 3000}},
		{composeProd, []string{"acgs", "redis", "nginx", "prometheus", "grafana"}, 3, map[string]uint32{"nginx": 8004}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p, err := loadCompose(t, tc.file, composeEnv)
			if err != nil {
				t.Fatalf("compose-go: %v", err)
			}
			for _, name := range tc.services {
				if _, ok := p.Services[name]; !ok {
					t.Errorf("no service %q", name)
				}
			}
			for name, svc := range p.Services {
				if svc.Build != nil {
					if st, err := os.Stat(svc.Build.Context); err != nil || !st.IsDir() {
						t.Errorf("%s: build context %s: %v", name, svc.Build.Context, err)
					}
					df := svc.Build.Dockerfile
					if !filepath.IsAbs(df) {
						df = filepath.Join(svc.Build.Context, df)
					}
					if _, err := os.Stat(df); err != nil {
						t.Errorf("%s: Dockerfile: %v", name, err)
					}
				}
				for _, v := range svc.Volumes {
					if v.Type != types.VolumeTypeBind {
						continue
					}
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("%s: mounts %s, which does not exist: %v", name, v.Source, err)
					}
				}
				if want, ok := tc.publishes[name]; ok {
					var got []uint32
					for _, port := range svc.Ports {
						n, _ := strconv.ParseUint(port.Published, 10, 32)
						got = append(got, uint32(n))
					}
					if !slices.Contains(got, want) {
						t.Errorf("%s publishes %v, want %d", name, got, want)
					}
				}
			}
			acgs := p.Services["acgs"]
			redisURL := acgs.Environment["REDIS_URL"]
			if redisURL == nil || !strings.Contains(*redisURL, ":"+composeEnv["REDIS_PASSWORD"]+"@redis:6379") {
				t.Errorf("acgs REDIS_URL %v does not carry the Redis password", redisURL)
			}
			cmd := strings.Join(p.Services["redis"].Command, " ")
			if !strings.Contains(cmd, "--requirepass "+composeEnv["REDIS_PASSWORD"]) {
				t.Errorf("redis command %q does not require the password", cmd)
			}
			if !acgs.ReadOnly {
				t.Error("acgs root file system is writable")
			}
			replicas := 1
			if acgs.Deploy != nil && acgs.Deploy.Replicas != nil {
				replicas = *acgs.Deploy.Replicas
			}
			if replicas != tc.replicas {
				t.Errorf("acgs replicas %d, want %d", replicas, tc.replicas)
			}
			if tc.replicas > 1 {
				d := acgs.Deploy
				lim, res := d.Resources.Limits, d.Resources.Reservations
				if lim == nil || res == nil {
					t.Fatal("acgs has no resource limits and reservations")
				}
				const mb = 1 << 20
				if lim.MemoryBytes != 500*mb || lim.NanoCPUs != 1.0 || res.MemoryBytes != 300*mb || res.NanoCPUs != 0.5 {
					t.Errorf("limits %v/%v reservations %v/%v, want 500M/1.0 and 300M/0.5",
						lim.MemoryBytes, lim.NanoCPUs, res.MemoryBytes, res.NanoCPUs)
				}
			}
		})
		t.Run(tc.file+" without secrets", func(t *testing.T) {
			env := map[string]string{}
			for k, v := range composeEnv {
				if k != "REDIS_PASSWORD" {
					env[k] = v
				}
			}
			if _, err := loadCompose(t, tc.file, env); err == nil || !strings.Contains(err.Error(), "REDIS_PASSWORD") {
				t.Fatalf("loaded without REDIS_PASSWORD (error %v): there must be no default password", err)
			}
		})
	}
}

// TestDockerfile checks the image recipe statically (Docker does not run
// here): a golang:1.26 build stage making a static binary, a distroless
// non-root final stage with the health check, and COPY sources that exist.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	var insts []string
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "" {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		insts = append(insts, cur.String())
		cur.Reset()
	}
	var froms []string
	for _, in := range insts {
		if strings.HasPrefix(in, "FROM ") {
			froms = append(froms, in)
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "FROM golang:1.26 ") || froms[1] != "FROM gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("stages %q, want a golang:1.26 builder and gcr.io/distroless/static-debian12:nonroot", froms)
	}
	final := insts[slices.Index(insts, froms[len(froms)-1]):]
	for _, want := range []string{
		"USER nonroot:nonroot", "EXPOSE 8004",
		`HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/acgs","healthcheck"]`,
		`ENTRYPOINT ["/acgs"]`,
	} {
		if !slices.Contains(final, want) {
			t.Errorf("final stage lacks %q", want)
		}
	}
	var build string
	for _, in := range insts {
		if strings.HasPrefix(in, "RUN ") && strings.Contains(in, "go build") {
			build = in
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-o /out/acgs ./cmd/acgs", "internal/version.Version="} {
		if !strings.Contains(build, want) {
			t.Errorf("build step %q lacks %q", build, want)
		}
	}
	// COPY sources are relative to the build context, the repository root.
	for _, in := range insts {
		f := strings.Fields(in)
		if f[0] != "COPY" || strings.HasPrefix(f[1], "--from=") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
		}
	}
	ignore, err := os.ReadFile(dockerfile + ".dockerignore")
	if err != nil {
		t.Fatalf("%s.dockerignore: %v", dockerfile, err)
	}
	for _, want := range []string{"!cmd/", "!internal/", "!policies/", "!go.mod", "!go.sum"} {
		if !strings.Contains(string(ignore), want) {
			t.Errorf("%s.dockerignore excludes %s, which the build copies", dockerfile, want)
		}
	}
}

// TestDeployScript checks deploy.sh parses, and answers usage (exit 2)
// without arguments.
func TestDeployScript(t *testing.T) {
	bash := testenv.RequireBinary(t, "bash", "bash")
	if out, err := exec.Command(bash, "-n", deployScript).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", deployScript, err, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, deployScript).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s:\n%s", deployScript, out)
		}
	}
	cmd := exec.Command(bash, deployScript)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "deploy/deploy.sh compose up") {
		t.Fatalf("deploy.sh without arguments: %v\n%s", err, out)
	}
	if st, err := os.Stat(deployScript); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", deployScript)
	}
}
