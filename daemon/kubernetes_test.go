package daemon

import (
	"strings"
	"testing"
	"time"
)

const kubeConfig = `repositories:
  - name: models
    url: https://github.com/acme/models.git
target: kubernetes
kubernetes:
  namespace: models
  registry: registry.example.com/models
  gateway: istio-system/ingressgateway
  host: models.example.com
`

func TestKubernetesDefaults(t *testing.T) {
	c, err := ParseConfig("merlin.config.yaml", []byte(kubeConfig))
	if err != nil {
		t.Fatal(err)
	}
	le := c.Kubernetes.LeaderElection
	if !le.On() || le.LeaseName != DefaultLeaseName || le.Namespace != "" ||
		le.LeaseDuration.D() != 15*time.Second || le.RenewDeadline.D() != 10*time.Second || le.RetryPeriod.D() != 2*time.Second {
		t.Errorf("leader election defaults = %+v (enabled %v)", le, le.On())
	}
	if c.Kubernetes.Namespace != "models" || c.Kubernetes.Gateway != "istio-system/ingressgateway" {
		t.Errorf("kubernetes = %+v", c.Kubernetes)
	}

	local, err := ParseConfig("c.yaml", []byte("repositories: [{name: m, url: /x}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if local.Kubernetes.LeaderElection.On() {
		t.Error("leader election is on by default for target local")
	}

	off, err := ParseConfig("c.yaml", []byte(kubeConfig+"  leaderElection: {enabled: false, leaseName: other, leaseDuration: 1m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if le := off.Kubernetes.LeaderElection; le.On() || le.LeaseName != "other" || le.LeaseDuration.D() != time.Minute {
		t.Errorf("explicit leader election = %+v", le)
	}
}

// TestKubernetesErrors checks that every problem of the kubernetes block is
// reported with the file, line and column of the offending value (or of the
// closest written key when a required field is missing).
func TestKubernetesErrors(t *testing.T) {
	const repos = "repositories: [{name: m, url: /x}]\n"
	tests := []struct {
		name, config string
		want         []string
	}{
		{"namespace missing", repos + "target: kubernetes\nkubernetes:\n  host: a.example.com\n",
			[]string{"c.yaml:3:1: kubernetes.namespace: is required with target kubernetes"}},
		{"no kubernetes block", repos + "target: kubernetes\n",
			[]string{"c.yaml:1:1: kubernetes.namespace: is required"}},
		{"bad namespace", repos + "target: kubernetes\nkubernetes:\n  namespace: Models_1\n",
			[]string{`c.yaml:4:14: kubernetes.namespace: "Models_1" is not a valid namespace`}},
		{"registry with scheme", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  registry: https://reg.example.com/m\n",
			[]string{`c.yaml:5:13: kubernetes.registry: "https://reg.example.com/m" has a scheme`}},
		{"registry upper case", repos + "target: kubernetes\nkubernetes: {namespace: m, registry: Reg.example.com/M}\n",
			[]string{`c.yaml:3:38: kubernetes.registry: "Reg.example.com/M" is not a registry`}},
		{"host missing", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  gateway: istio-system/gw\n",
			[]string{"c.yaml:3:1: kubernetes.host: is required with target kubernetes"}},
		{"gateway in the models namespace", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  gateway: gw\n  host: h.example.com\n", nil},
		{"bad gateway name", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  gateway: istio-system/GW\n  host: h.example.com\n",
			[]string{`c.yaml:5:12: kubernetes.gateway: "istio-system/GW" has an invalid gateway name`}},
		{"bad gateway namespace", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  gateway: Istio/gw\n  host: h.example.com\n",
			[]string{`c.yaml:5:12: kubernetes.gateway: "Istio/gw" has an invalid namespace`}},
		{"bad host", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  host: http://h\n",
			[]string{`c.yaml:5:9: kubernetes.host: "http://h" is not a valid host`}},
		{"wildcard host", repos + "target: kubernetes\nkubernetes: {namespace: m, host: '*.models.example.com', gateway: istio-system/gw}\n", nil},
		{"lease timings", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  leaderElection:\n    leaseDuration: 5s\n    renewDeadline: 5s\n    retryPeriod: 5s\n",
			[]string{
				"c.yaml:6:20: kubernetes.leaderElection.leaseDuration: 5s must be longer than renewDeadline (5s)",
				"c.yaml:7:20: kubernetes.leaderElection.renewDeadline: 5s must be longer than 1.2 × retryPeriod (5s)",
			}},
		{"lease name", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  leaderElection: {leaseName: Lease_1, namespace: ns.x}\n",
			[]string{
				`c.yaml:5:51: kubernetes.leaderElection.namespace: "ns.x" is not a valid namespace`,
				`c.yaml:5:31: kubernetes.leaderElection.leaseName: "Lease_1" is not a valid object name`,
			}},
		{"election with local target", repos + "kubernetes:\n  leaderElection:\n    enabled: true\n",
			[]string{"c.yaml:4:14: kubernetes.leaderElection.enabled: leader election needs target kubernetes"}},
		{"unknown field", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  leaderElection: {leasename: x}\n",
			[]string{`c.yaml:5:20: kubernetes.leaderElection.leasename: unknown field "leasename" in kubernetes.leaderElection (did you mean "leaseName"?)`}},
		{"duration without unit", repos + "target: kubernetes\nkubernetes:\n  namespace: m\n  leaderElection: {retryPeriod: 2}\n",
			[]string{`c.yaml:5:33: kubernetes.leaderElection.retryPeriod: duration 2 needs a unit`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.config))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

// TestInstallConfig checks the configuration shipped with the in-cluster
// install (config/manager) is valid and targets the cluster with leader
// election on.
func TestInstallConfig(t *testing.T) {
	c, err := LoadConfig("../config/manager/merlin.config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Target != "kubernetes" || !c.Kubernetes.LeaderElection.On() || c.Kubernetes.Namespace == "" {
		t.Errorf("install config: target %q, kubernetes %+v", c.Target, c.Kubernetes)
	}
}
