package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"merlin.dev/merlin/internal/gittest"
)

// BenchmarkCommitToServing measures, over 10 commits of retrained models
// to a repository served by git daemon and polled every second, the time
// from the commit to the first prediction answered by the new version
// that equals Python's own model.predict:
//
//	go test ./e2e -run '^$' -bench BenchmarkCommitToServing -benchtime 1x
func BenchmarkCommitToServing(b *testing.B) {
	requirePython(b)
	const commits = 10
	// Train every model and ask Python for its answers first, so that only
	// Merlin's part is timed.
	type candidate struct{ dir, want string }
	var models []candidate
	for i := range commits {
		dir := train(b, 100+i, 0.05+0.1*float64(i))
		models = append(models, candidate{dir, normJSON(pythonPredict(b, filepath.Join(dir, "model"), irisRows))})
	}
	for range b.N {
		repo := gittest.NewRepo(b)
		_, url := gittest.StartDaemon(b, repo)
		repo.CommitDir("add iris", examplesDir(model), "models/"+model)
		m := newMerlin(b, url)
		m.start()
		version := m.waitServing("the first version to serve", model).version

		var took []time.Duration
		for i, c := range models {
			repo.CommitDir(fmt.Sprintf("retrain %d", i), c.dir, "models/"+model)
			committed := time.Now()
			for {
				a, err := m.predict(model, irisRows)
				if err == nil && a.code == 200 && a.version != version {
					if got := predictions(b, a); got != c.want {
						b.Fatalf("commit %d: %s answered %s, Python says %s", i, a.version, got, c.want)
					}
					took = append(took, time.Since(committed))
					version = a.version
					break
				}
				if time.Since(committed) > 2*time.Minute {
					b.Fatalf("commit %d not serving after 2m (last: %+v %v)", i, a, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		sorted := slices.Clone(took)
		slices.Sort(sorted)
		p50, maxT := sorted[len(sorted)/2], sorted[len(sorted)-1]
		fmt.Printf("\ncommit → first correct prediction (git daemon, poll interval 1s, %d commits of retrained iris models, direct strategy):\n", commits)
		fmt.Printf("  p50 %s   max %s   min %s   (target p50 ≤ 5s)\n", p50.Round(time.Millisecond), maxT.Round(time.Millisecond), sorted[0].Round(time.Millisecond))
		fmt.Printf("  each: %v\n", roundAll(took))
		b.ReportMetric(p50.Seconds(), "p50-s")
		b.ReportMetric(maxT.Seconds(), "max-s")
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
