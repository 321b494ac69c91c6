package modelserver

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"merlin.dev/merlin/internal/poll"
)

// TestSIGTERMWhileLoading stops a server in the middle of loading its
// model, as a daemon stopped during a burst of starts does. The model's
// loading code catches every exception and goes on loading (a model is
// code, and a retry loop around "except BaseException" is not rare): the
// server must still exit at once, cleanly, rather than wait for the
// daemon's SIGKILL. It must also not unwind and finalize numpy and the
// flavor's libraries, which took longer than the stop timeout on a loaded
// machine with dozens of servers loading.
func TestSIGTERMWhileLoading(t *testing.T) {
	requirePython(t)
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"MLmodel": `artifact_path: model
flavors:
  python_function:
    code: code
    data: data
    loader_module: slowload
    python_version: 3.11.2
mlflow_version: 2.12.2
`,
		"data/.keep": "",
		"code/slowload.py": `import os
import time


def _load_pyfunc(path):
    open(os.path.join(path, "loading"), "w").close()
    while True:
        try:
            time.sleep(3600)
        except BaseException:  # a loader that retries whatever happens
            pass
`,
	})
	p := start(t, Options{ModelDir: dir, Name: "slow", Version: "1"})
	poll.Until(t, time.Minute, "the model to be loading", func() bool {
		_, err := os.Stat(filepath.Join(dir, "data", "loading"))
		return err == nil
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM while loading:\n%s", code, p.output.String())
	}
}
