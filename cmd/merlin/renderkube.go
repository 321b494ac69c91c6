package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"merlin.dev/merlin/builder"
	"merlin.dev/merlin/daemon"
	"merlin.dev/merlin/manifest"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/serving/kube"
)

// kubeRenderFlags are the kubernetes settings of `merlin render`: from the
// daemon config's kubernetes block (--config), overridden by flags.
type kubeRenderFlags struct {
	config, namespace, gateway, host, registry string
}

func (k *kubeRenderFlags) settings() (kube.Config, error) {
	var cfg kube.Config
	if k.config != "" {
		c, err := daemon.LoadConfig(k.config)
		if err != nil {
			return cfg, err
		}
		cfg = kube.Config{Namespace: c.Kubernetes.Namespace, Gateway: c.Kubernetes.Gateway, Host: c.Kubernetes.Host, Registry: c.Kubernetes.Registry}
	}
	for _, o := range []struct{ flag, dst *string }{
		{&k.namespace, &cfg.Namespace}, {&k.gateway, &cfg.Gateway}, {&k.host, &cfg.Host}, {&k.registry, &cfg.Registry},
	} {
		if *o.flag != "" {
			*o.dst = *o.flag
		}
	}
	if cfg.Namespace == "" {
		return cfg, fmt.Errorf("no namespace: pass --namespace or --config with a kubernetes block")
	}
	return cfg, cfg.Validate()
}

// renderKube prints, per model, the objects the kubernetes target applies
// when the model is first deployed: its version's InferenceService and the
// VirtualService sending it all traffic.
//
// Version IDs are what the daemon computes: for source.path models the
// builder's content digest of the model directory and serving settings
// (the storageUri is the modelcar image oci://<registry>/<model>:<digest>,
// so --registry or the config's kubernetes.registry is needed). For
// source.uri models the storageUri is the URI and the digest hashes the
// URI with the serving settings, since the files are not fetched offline.
// source.mlflow references are resolved against the tracking server by
// the daemon; render refuses them rather than guess.
func renderKube(stdout io.Writer, models []*manifest.Model, cfg kube.Config) error {
	tmp, err := os.MkdirTemp("", "merlin-render-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := builder.New(tmp)
	if err != nil {
		return err
	}
	for _, m := range models {
		v, err := renderVersion(b, m)
		if err != nil {
			return err
		}
		objs, err := kube.Render(serving.Deployment{Model: v.Model, Versions: []serving.Version{v}, Traffic: map[string]int{v.ID: 100}}, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", m.File, err)
		}
		us, err := objs.Unstructured()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# %s (%s): version %s with 100%% of traffic\n", m.Metadata.Name, m.File, v.ID)
		if err := kube.WriteYAML(stdout, us); err != nil {
			return err
		}
	}
	return nil
}

func renderVersion(b *builder.Builder, m *manifest.Model) (serving.Version, error) {
	src := m.Spec.Source
	switch {
	case src.Path != "":
		rel, err := builder.SourceDir(m, ".")
		if err != nil {
			return serving.Version{}, err
		}
		res, err := b.Build(os.DirFS(filepath.Dir(m.File)), rel, m)
		if err != nil {
			return serving.Version{}, err
		}
		return builder.Version(m, res.Digest, builder.Origin{}), nil
	case src.URI != "":
		v := builder.Version(m, builder.URIDigest(m), builder.Origin{})
		v.StorageURI = src.URI
		return v, nil
	default:
		return serving.Version{}, m.Errorf("spec.source.mlflow", "render cannot resolve MLflow reference %q offline: the daemon resolves it against the tracking server to a storage URI and digest", src.MLflow)
	}
}
