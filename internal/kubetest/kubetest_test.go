package kubetest

import (
	"context"
	"testing"
	"time"

	kservev1beta1 "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestMain(m *testing.M) { Main(m) }

// TestCRDsAndRestart creates an InferenceService and a VirtualService
// (the CRDs are installed and their schemas accept them), restarts the API
// server, and reads both back with the same client.
func TestCRDsAndRestart(t *testing.T) {
	env := Get(t)
	ns := env.Namespace(t)
	ctx := t.Context()
	isvc := &kservev1beta1.InferenceService{
		ObjectMeta: metav1.ObjectMeta{Name: "iris", Namespace: ns},
		Spec: kservev1beta1.InferenceServiceSpec{Predictor: kservev1beta1.PredictorSpec{
			Model: &kservev1beta1.ModelSpec{
				ModelFormat:            kservev1beta1.ModelFormat{Name: "sklearn"},
				PredictorExtensionSpec: kservev1beta1.PredictorExtensionSpec{StorageURI: ptr.To("gs://bucket/iris")},
			},
		}},
	}
	vs := &istionetworkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "iris", Namespace: ns},
	}
	vs.Spec.Hosts = []string{"iris.example.com"}
	vs.Spec.Http = []*networkingv1alpha3.HTTPRoute{{
		Route: []*networkingv1alpha3.HTTPRouteDestination{{
			Destination: &networkingv1alpha3.Destination{Host: "iris-predictor." + ns + ".svc.cluster.local"},
			Weight:      100,
		}},
	}}
	for _, o := range []client.Object{isvc, vs} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	// The schema rejects what it should: a VirtualService weight is an int32.
	bad := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}}
	bad.Spec.Http = []*networkingv1alpha3.HTTPRoute{{Route: []*networkingv1alpha3.HTTPRouteDestination{{}}}}
	if err := env.Client.Create(ctx, bad); err == nil {
		t.Error("a route without destination was accepted; the Istio CRD schema is not installed")
	}

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := env.Client.Get(short, client.ObjectKeyFromObject(isvc), &kservev1beta1.InferenceService{})
	cancel()
	if err == nil {
		t.Error("read succeeded while the API server was stopped")
	}
	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	var got kservev1beta1.InferenceService
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(isvc), &got); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if u := got.Spec.Predictor.Model.StorageURI; u == nil || *u != "gs://bucket/iris" {
		t.Errorf("storageUri after restart = %v", u)
	}
}
