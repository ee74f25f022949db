package main

// The deployment files under deploy/ (issue 15) are held here to what this
// binary accepts and to the Kubernetes API types, so that a renamed flag or
// a misspelt field fails the build instead of a cluster. `make test-deploy`
// runs them for real.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const deployDir = "../../deploy"

// k8sKind returns a new object of the Kubernetes kind, and the only API
// version the manifests write it in; nil for a kind they do not use.
func k8sKind(name string) (apiVersion string, object any) {
	switch name {
	case "Namespace":
		return "v1", new(corev1.Namespace)
	case "Secret":
		return "v1", new(corev1.Secret)
	case "Service":
		return "v1", new(corev1.Service)
	case "PersistentVolumeClaim":
		return "v1", new(corev1.PersistentVolumeClaim)
	case "StatefulSet":
		return "apps/v1", new(appsv1.StatefulSet)
	case "Deployment":
		return "apps/v1", new(appsv1.Deployment)
	case "HorizontalPodAutoscaler":
		return "autoscaling/v2", new(autoscalingv2.HorizontalPodAutoscaler)
	case "PodDisruptionBudget":
		return "policy/v1", new(policyv1.PodDisruptionBudget)
	case "NetworkPolicy":
		return "networking.k8s.io/v1", new(networkingv1.NetworkPolicy)
	}
	return "", nil
}

// strictYAML decodes doc into v as the Kubernetes API server decodes a
// request: a repeated key, an unknown field or a field in the wrong case
// (which encoding/json would match) is an error.
func strictYAML(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// manifest is one decoded object and where it came from.
type manifest struct {
	file   string
	object any
}

// decodeManifests decodes every document of the files strictly (an unknown
// or repeated field is an error) into its Kubernetes API type.
func decodeManifests(t *testing.T, files ...string) []manifest {
	t.Helper()
	var out []manifest
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Errorf("%s, document %d: %v", file, i+1, err)
				continue
			}
			if meta.Kind == "" {
				if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) != "" {
					t.Errorf("%s, document %d: no kind", file, i+1)
				}
				continue
			}
			apiVersion, obj := k8sKind(meta.Kind)
			if obj == nil {
				t.Errorf("%s, document %d: kind %s is not one the deployment uses", file, i+1, meta.Kind)
				continue
			}
			if meta.APIVersion != apiVersion {
				t.Errorf("%s: %s in apiVersion %q, want %q", file, meta.Kind, meta.APIVersion, apiVersion)
			}
			if err := strictYAML([]byte(doc), obj); err != nil {
				t.Errorf("%s: %s: %v", file, meta.Kind, err)
				continue
			}
			out = append(out, manifest{file, obj})
		}
	}
	return out
}

func k8sFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
}

func podmanFile() string { return filepath.Join(deployDir, "podman", "farm.yaml") }

func TestDeployFilesKubernetesDecodeStrictly(t *testing.T) {
	files := k8sFiles(t)
	ms := decodeManifests(t, files...)
	have := map[string]bool{}
	for _, m := range ms {
		have[fmt.Sprintf("%T", m.object)] = true
	}
	for _, want := range []string{"*v1.StatefulSet", "*v1.Deployment", "*v1.Service", "*v2.HorizontalPodAutoscaler", "*v1.PodDisruptionBudget"} {
		if !have[want] {
			t.Errorf("deploy/k8s holds no %s", want)
		}
	}
	decodeManifests(t, podmanFile())

	// The kustomization lists every manifest, and only those.
	var k struct {
		APIVersion      string   `json:"apiVersion"`
		Kind            string   `json:"kind"`
		Namespace       string   `json:"namespace"`
		Labels          []any    `json:"labels"`
		Resources       []string `json:"resources"`
		SecretGenerator []struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		} `json:"secretGenerator"`
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "k8s", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := strictYAML(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var listed []string
	for _, f := range files {
		listed = append(listed, filepath.Base(f))
	}
	slices.Sort(listed)
	res := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(res, listed) {
		t.Errorf("kustomization.yaml lists %v, the folder holds %v", res, listed)
	}
	if len(k.SecretGenerator) != 1 || k.SecretGenerator[0].Name != "framefarm-token" {
		t.Errorf("kustomization.yaml generates %+v, want the secret framefarm-token", k.SecretGenerator)
	}
}

// podSpecs are the pod templates of the manifests' workloads.
func podSpecs(ms []manifest) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, m := range ms {
		switch o := m.object.(type) {
		case *appsv1.StatefulSet:
			out[filepath.Base(m.file)+": "+o.Name] = &o.Spec.Template.Spec
		case *appsv1.Deployment:
			out[filepath.Base(m.file)+": "+o.Name] = &o.Spec.Template.Spec
		}
	}
	return out
}

// TestDeployFilesPodsHardened holds every pod to the security context the
// issue asks for, and the node pods to their shape: node and ambassador side
// by side, on the same loopback port, and long enough to give sets back.
func TestDeployFilesPodsHardened(t *testing.T) {
	ms := decodeManifests(t, append(k8sFiles(t), podmanFile())...)
	specs := podSpecs(ms)
	if len(specs) != 4 {
		t.Errorf("%d workloads, want 4 (coordinator and nodes, in deploy/k8s and deploy/podman)", len(specs))
	}
	for name, spec := range specs {
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: the pod must run as non-root (runAsNonRoot, runAsUser)", name)
		}
		if g := spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want at least 30 for the SIGTERM give-back", name, g)
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s, container %s: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", name, c.Name)
			}
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.GRPC == nil {
					t.Errorf("%s, container %s: a probe that is not Kubernetes' gRPC probe", name, c.Name)
				}
			}
			// podman ignores probes; Kubernetes runs them on the gRPC
			// health service of the coordinator and the ambassador.
			if !strings.HasPrefix(name, "farm.yaml") && c.Name != "node" && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
				t.Errorf("%s, container %s: want readiness and liveness probes", name, c.Name)
			}
		}
		if !strings.Contains(name, "node") {
			continue
		}
		if len(spec.Containers) != 2 || spec.Containers[0].Name != "ambassador" || spec.Containers[1].Name != "node" {
			t.Errorf("%s: want the containers ambassador and node, as ordinary containers of one pod", name)
			continue
		}
		listen := flagValue(spec.Containers[0].Args, "--listen")
		amb := flagValue(spec.Containers[1].Args, "--ambassador")
		if _, lp, _ := net.SplitHostPort(listen); lp == "" || !strings.HasSuffix(amb, ":"+lp) || !strings.HasPrefix(amb, "127.0.0.1:") {
			t.Errorf("%s: the node dials %q, its ambassador listens on %q: want the ambassador's port on loopback", name, amb, listen)
		}
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// commandLine is one framefarm command line of a deployment file.
type commandLine struct {
	where string
	args  []string // without the program
}

func containerCommandLines(t *testing.T, ms []manifest) []commandLine {
	t.Helper()
	var out []commandLine
	for name, spec := range podSpecs(ms) {
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			args := append(slices.Clone(c.Command), c.Args...)
			// The image's entrypoint is framefarm; a command must name it.
			if len(c.Command) > 0 {
				if filepath.Base(c.Command[0]) != "framefarm" {
					t.Errorf("%s, container %s runs %q, not framefarm", name, c.Name, c.Command[0])
					continue
				}
				args = args[1:]
			}
			out = append(out, commandLine{name + ", container " + c.Name, args})
		}
	}
	return out
}

// composeFile is the part of the compose specification the compose file
// uses, decoded strictly so that a misspelt key fails.
type composeFile struct {
	Name       string                    `json:"name"`
	XHardening composeService            `json:"x-hardening"`
	XToken     map[string]string         `json:"x-token"`
	Services   map[string]composeService `json:"services"`
	Volumes    map[string]any            `json:"volumes"`
}

type composeService struct {
	Image           string            `json:"image"`
	Build           map[string]string `json:"build"`
	User            string            `json:"user"`
	ReadOnly        bool              `json:"read_only"`
	CapDrop         []string          `json:"cap_drop"`
	SecurityOpt     []string          `json:"security_opt"`
	Tmpfs           []string          `json:"tmpfs"`
	Restart         string            `json:"restart"`
	Environment     map[string]string `json:"environment"`
	Entrypoint      []string          `json:"entrypoint"`
	Command         []string          `json:"command"`
	Ports           []string          `json:"ports"`
	Volumes         []string          `json:"volumes"`
	StopGracePeriod string            `json:"stop_grace_period"`
	DependsOn       []string          `json:"depends_on"`
}

func composeCommandLines(t *testing.T) []commandLine {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := strictYAML(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var out []commandLine
	nodes, ambassadors := 0, map[string]int{}
	for name, s := range c.Services {
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges") || s.User == "" || strings.HasPrefix(s.User, "0") {
			t.Errorf("compose.yaml, service %s: want read_only, cap_drop ALL, no-new-privileges and a non-root user", name)
		}
		switch name {
		case "s3":
			checkComposeS3(t, c)
			continue
		case "s3-init":
			checkComposeS3Init(t, c)
			continue
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "AWS_") && name != "coordinator" {
				t.Errorf("compose.yaml, service %s holds %s: only the coordinator talks to the bucket", name, k)
			}
		}
		if len(s.Command) > 0 && s.Command[0] == "node" {
			nodes++
			// Each node has an ambassador of its own, on the port it listens on.
			host, port, _ := net.SplitHostPort(flagValue(s.Command, "--ambassador"))
			amb, ok := c.Services[host]
			if _, lp, _ := net.SplitHostPort(flagValue(amb.Command, "--listen")); !ok || len(amb.Command) == 0 || amb.Command[0] != "ambassador" || lp != port {
				t.Errorf("compose.yaml, service %s: --ambassador %s:%s is not an ambassador service listening on that port", name, host, port)
			}
			ambassadors[host]++
			if _, ok := s.Environment["FRAMEFARM_TOKEN"]; ok {
				t.Errorf("compose.yaml, service %s: a node holds no token, its ambassador does", name)
			}
		}
		out = append(out, commandLine{"compose.yaml, service " + name, s.Command})
	}
	if nodes != 2 || len(ambassadors) != 2 {
		t.Errorf("compose.yaml runs %d nodes through %d ambassadors, want 2 nodes, each with its own", nodes, len(ambassadors))
	}
	return out
}

// checkComposeS3 holds the compose file's S3 server to its shape: versitygw
// built by deploy/versitygw/Dockerfile at the version the storage tests run,
// its posix backend on a named volume, its root keys from the environment
// (never written in the file) and the very ones the coordinator signs with.
func checkComposeS3(t *testing.T, c composeFile) {
	t.Helper()
	s := c.Services["s3"]
	if s.Build["context"] != "versitygw" || s.Build["dockerfile"] != "Dockerfile" || !strings.Contains(s.Image, "${FRAMEFARM_S3_IMAGE") {
		t.Errorf("compose.yaml, service s3: build %v image %q, want deploy/versitygw/Dockerfile, image named by FRAMEFARM_S3_IMAGE", s.Build, s.Image)
	}
	docker, err := os.ReadFile(filepath.Join(deployDir, "versitygw", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	install, err := os.ReadFile("../../scripts/install-versitygw.sh")
	if err != nil {
		t.Fatal(err)
	}
	v := regexp.MustCompile(`(?m)^VERSION=(v[0-9.]+)$`).FindSubmatch(install)
	if v == nil || !bytes.Contains(docker, []byte("ARG VERSITYGW_VERSION="+string(v[1])+"\n")) {
		t.Errorf("deploy/versitygw/Dockerfile does not build versitygw %s, the version the storage tests run", v)
	}
	// Its keys and the coordinator's are the same variables, required.
	keyRef := regexp.MustCompile(`^\$\{(FRAMEFARM_S3_[A-Z_]+):\?[^}]+\}$`)
	coord := c.Services["coordinator"]
	for root, aws := range map[string]string{"ROOT_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "ROOT_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"} {
		m := keyRef.FindStringSubmatch(s.Environment[root])
		if m == nil {
			t.Errorf("compose.yaml, service s3: %s is %q, want a required ${FRAMEFARM_S3_...:?...} variable", root, s.Environment[root])
			continue
		}
		if cm := keyRef.FindStringSubmatch(coord.Environment[aws]); cm == nil || cm[1] != m[1] {
			t.Errorf("compose.yaml: the coordinator's %s is %q, want ${%s} like the S3 server's %s", aws, coord.Environment[aws], m[1], root)
		}
	}
	// The posix backend's folders on a named volume, so objects outlive
	// the container.
	vol := ""
	for _, v := range s.Volumes {
		if name, at, _ := strings.Cut(v, ":"); at == "/data" {
			vol = name
		}
	}
	if _, ok := c.Volumes[vol]; !ok || vol == "" {
		t.Errorf("compose.yaml, service s3: volumes %v, want a named volume at /data", s.Volumes)
	}
	i := slices.Index(s.Command, "posix")
	if i < 0 || !slices.Contains(s.Command[i:], "--sidecar") || !strings.HasPrefix(s.Command[len(s.Command)-1], "/data/") {
		t.Errorf("compose.yaml, service s3: command %q, want the posix backend under /data with --sidecar", s.Command)
	}
	if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":7070") || flagValue(s.Command, "--port") != ":7070" {
		t.Errorf("compose.yaml, service s3: listens on %q, publishes %v: want :7070", flagValue(s.Command, "--port"), s.Ports)
	}
}

// checkComposeS3Init holds the compose file's one-shot s3-init to making
// the very bucket the coordinator's --storage names, on the s3 service
// whose host the pre-signed URLs carry (the nodes resolve it by name), with
// the s3 service's own root keys.
func checkComposeS3Init(t *testing.T, c composeFile) {
	t.Helper()
	s, s3, coord := c.Services["s3-init"], c.Services["s3"], c.Services["coordinator"]
	u, err := url.Parse(flagValue(coord.Command, "--storage"))
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		t.Errorf("compose.yaml: the coordinator's --storage is %q, want an s3:// bucket (err %v)", flagValue(coord.Command, "--storage"), err)
		return
	}
	if ep := u.Query().Get("endpoint"); ep != "http://s3"+flagValue(s3.Command, "--port") || ep != s.Environment["ADMIN_ENDPOINT_URL"] {
		t.Errorf("compose.yaml: the coordinator's --storage endpoint is %q and s3-init's %q, want both http://s3 on the s3 service's --port %s",
			ep, s.Environment["ADMIN_ENDPOINT_URL"], flagValue(s3.Command, "--port"))
	}
	if s.Environment["BUCKET"] != u.Host {
		t.Errorf("compose.yaml, service s3-init: makes bucket %q, but the coordinator's --storage is in %q", s.Environment["BUCKET"], u.Host)
	}
	for admin, root := range map[string]string{"ADMIN_ACCESS_KEY_ID": "ROOT_ACCESS_KEY_ID", "ADMIN_SECRET_ACCESS_KEY": "ROOT_SECRET_ACCESS_KEY"} {
		if s.Environment[admin] == "" || s.Environment[admin] != s3.Environment[root] {
			t.Errorf("compose.yaml, service s3-init: %s is %q, want the s3 service's %s %q", admin, s.Environment[admin], root, s3.Environment[root])
		}
	}
	if s.Image != s3.Image || !slices.Equal(s.Entrypoint, []string{"/bin/sh", "-c"}) || len(s.Command) != 1 ||
		!strings.Contains(s.Command[0], "versitygw admin create-bucket") {
		t.Errorf("compose.yaml, service s3-init: want the s3 service's image %q running versitygw admin create-bucket in /bin/sh -c", s3.Image)
	}
	// A one-shot under unless-stopped would be started again forever.
	if s.Restart != "no" || !slices.Contains(s.DependsOn, "s3") {
		t.Errorf("compose.yaml, service s3-init: restart %q, depends_on %v: want restart \"no\" and depends_on s3", s.Restart, s.DependsOn)
	}
}

// systemdCommandLines returns every unit's ExecStart, with the variables
// of the example environment file put in as systemd does: ${X} as one
// word, $X split on white space (none when empty).
func systemdCommandLines(t *testing.T) []commandLine {
	t.Helper()
	dir := filepath.Join(deployDir, "systemd")
	envText, err := os.ReadFile(filepath.Join(dir, "framefarm.env"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(envText), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			vars[strings.TrimSpace(k)] = v
		}
	}
	units, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 3 {
		t.Errorf("%d units in deploy/systemd, want coordinator, ambassador and node", len(units))
	}
	varRe := regexp.MustCompile(`^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$`)
	var out []commandLine
	for _, unit := range units {
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			cmd, ok := strings.CutPrefix(line, "ExecStart=")
			if !ok {
				continue
			}
			n++
			words := strings.Fields(cmd)
			if words[0] != "/usr/local/bin/framefarm" {
				t.Errorf("%s runs %s, want /usr/local/bin/framefarm", unit, words[0])
				continue
			}
			var args []string
			for _, w := range words[1:] {
				m := varRe.FindStringSubmatch(w)
				if m == nil {
					args = append(args, w)
					continue
				}
				v, ok := vars[m[1]]
				if !ok {
					t.Errorf("%s: ExecStart uses %s, which framefarm.env does not set", unit, w)
				}
				if strings.HasPrefix(w, "${") {
					args = append(args, v)
				} else {
					args = append(args, strings.Fields(v)...)
				}
			}
			out = append(out, commandLine{filepath.Base(unit), args})
		}
		if n != 1 {
			t.Errorf("%s has %d ExecStart lines, want 1", unit, n)
		}
	}
	return out
}

// TestDeployFilesCommandLines parses every framefarm command line of the
// deployment files with the binary's own flag sets: run with --help last,
// a role's flags are parsed as at start and the help is shown instead of
// serving; a flag it does not know, or a value it refuses, fails.
func TestDeployFilesCommandLines(t *testing.T) {
	lines := containerCommandLines(t, decodeManifests(t, append(k8sFiles(t), podmanFile())...))
	lines = append(lines, composeCommandLines(t)...)
	lines = append(lines, systemdCommandLines(t)...)
	if len(lines) < 14 {
		t.Errorf("%d command lines found, want at least 14 (2+2 in deploy/k8s, 2+2 in deploy/podman, 5 in compose, 3 units)", len(lines))
	}
	// The check itself must be able to fail.
	lines = append(lines, commandLine{"a misspelt flag", []string{"node", "--ambasador", "127.0.0.1:5556"}})

	for _, l := range lines {
		t.Run(l.where, func(t *testing.T) {
			if len(l.args) == 0 || !slices.Contains([]string{"coordinator", "ambassador", "node"}, l.args[0]) {
				t.Fatalf("runs framefarm %q: want a role (coordinator, ambassador or node)", l.args)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append(slices.Clone(l.args), "--help"), &env{stdout: &stdout, stderr: &stderr})
			ok := code == exitOK && strings.HasPrefix(stdout.String(), "Usage: framefarm "+l.args[0])
			if want := l.where != "a misspelt flag"; ok != want {
				t.Errorf("framefarm %s: exit %d, want %v\n%s", strings.Join(l.args, " "), code, want, &stderr)
			}
		})
	}
}

// TestDeployFilesSystemdVerify runs `systemd-analyze verify` on the units.
// An unknown key is only a warning there (exit 0), so that fails too.
func TestDeployFilesSystemdVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		lacking(t, "systemd-analyze is not installed (make test-deploy installs it)")
	}
	// verify checks that ExecStart's program is executable: the units are
	// copied with /usr/local/bin/framefarm pointing at an executable that
	// exists here (this test's own binary), and nothing else changed.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	units, err := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(tmp, filepath.Base(u))
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/local/bin/framefarm"), []byte(self)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if bytes.Contains(out, []byte("Unknown key")) || bytes.Contains(out, []byte("nknown section")) {
		t.Errorf("systemd-analyze verify finds unknown keys or sections")
	}
}
