package reconciler

import (
	"errors"
	"syscall"
	"time"
)

// saveErrorEvery is how often a state save that keeps failing with the
// same error is logged again.
const saveErrorEvery = 10 * time.Minute

// saveHealth follows the outcome of the state saves, which the reconciler
// attempts after every event and tick: a full disk must not log an error
// every second. A failure is logged when it starts or its error changes,
// then at most every saveErrorEvery; the first save that succeeds again
// is logged once.
type saveHealth struct {
	err    string    // the failing saves' error as last logged; "" while saves succeed
	cause  string    // what makes two failures the same (saveCause)
	since  time.Time // when saves started failing
	logged time.Time // when the failure was last logged
}

// saveCause is what makes two failed saves the same failure: the system
// error when there is one (every attempt names another temporary file),
// else the message.
func saveCause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// saveLog is what to log about one save.
type saveLog int

const (
	saveQuiet     saveLog = iota
	saveFailed            // log the failure
	saveRecovered         // log that the state is saved again
)

// observe records the outcome of a save at now and says what to log.
func (h *saveHealth) observe(err error, now time.Time) saveLog {
	if err == nil {
		if h.err == "" {
			return saveQuiet
		}
		h.err = ""
		return saveRecovered
	}
	cause := saveCause(err)
	switch {
	case h.err == "":
		h.since = now
	case cause == h.cause && now.Sub(h.logged) < saveErrorEvery:
		return saveQuiet
	}
	h.err, h.cause, h.logged = err.Error(), cause, now
	return saveFailed
}

// logSave logs what observe decided.
func (r *Reconciler) logSave(err error, what saveLog) {
	switch what {
	case saveFailed:
		r.log.Error("cannot save state", "err", err, "failing_since", r.saves.since,
			"next_log", "when the error changes, or in "+saveErrorEvery.String())
	case saveRecovered:
		r.log.Info("state saved again", "failed_for", r.now().Sub(r.saves.since).Round(time.Second))
	case saveQuiet:
	}
}
