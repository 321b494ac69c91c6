package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"merlin.dev/merlin/internal/atomicfile"
	"merlin.dev/merlin/metrics"
	"merlin.dev/merlin/pullrequest"
	"merlin.dev/merlin/reconciler"
	scm "merlin.dev/merlin/scm/github"
	"merlin.dev/merlin/serving"
	"merlin.dev/merlin/webhooks"
)

// pulls runs one repository's pull-request loop (SPEC §7): previews of
// pull request heads, the sticky comment and the commit statuses.
//
// Each open pull request has one worker goroutine, so that everything
// about it is serialised (50 events at once make one comment) while pull
// requests proceed independently. The worker is level-triggered: an event
// only updates what is known of the pull request and wakes it; the worker
// then brings the previews, the comment and the statuses in line with it,
// and again every commentInterval while there are figures to follow. What
// it has written to GitHub is kept in the state directory, so a restart
// edits the same comment and rewrites no status.
type pulls struct {
	d         *Daemon
	repo      string // Merlin's name of the repository
	fullName  string // GitHub's owner/name
	branch    string // the production branch: pull requests into it are previewed
	gh        *scm.Client
	interval  time.Duration
	pollEvery time.Duration // how often the open pull requests are listed
	statusURL string
	file      string
	log       *slog.Logger
	now       func() time.Time

	mu      sync.Mutex
	records map[int]*prRecord
	kicks   map[int]chan struct{} // the running workers' wake-ups
	ctx     context.Context       // the loop's, set by start
	wg      sync.WaitGroup
}

// prRecord is what the loop knows of one pull request and what it has
// written to GitHub.
type prRecord struct {
	PR pullrequest.PR `json:"pr"`
	// Previewed is the head whose previews are applied ("" when none);
	// Results are that head's models.
	Previewed string                     `json:"previewed,omitempty"`
	Results   []reconciler.PreviewResult `json:"results,omitempty"`
	// HeadError is why the head as a whole could not be previewed.
	HeadError string `json:"headError,omitempty"`
	// CommentID is the sticky comment (0: not known yet); OnGitHub is
	// what it says.
	CommentID int64                               `json:"commentID,omitempty"`
	OnGitHub  string                              `json:"onGitHub,omitempty"`
	Sent      map[string]pullrequest.CommitStatus `json:"sent,omitempty"`
	// Done: closed or merged and rolled out, and all of it reported (the
	// record is then dropped).
	Done bool `json:"done,omitempty"`

	// Measures of the previews since the head was previewed (or since
	// this run began): the counters then, by version.
	base    map[string]metrics.Snapshot
	history map[string][]pullrequest.Sample
	edits   pullrequest.Edits
	failing int // consecutive GitHub failures, for backoff
	// fetchFailures counts the head's failed fetches in a row, for backoff.
	fetchFailures int
	// changed is when an event last changed the pull request (a push, an
	// approval, a closing): reports wait up to settleFor (or
	// commentInterval, when longer) after it for the previews to settle, so that one event costs one edit and one
	// status, not one per stage a preview passes through.
	changed time.Time
}

// minPollEvery is the least time between two listings of the open pull
// requests (the repository's interval, when longer).
const minPollEvery = 10 * time.Second

// settleFor is the least time reports wait after an event for previews
// still building or starting: one that is ready by then is reported once
// (one edit, one status), and a slower one shows as pending.
const settleFor = 10 * time.Second

// settleRefresh is how often a pull request whose previews are on their
// way is looked at (locally: the reconciler's status), so that its report
// goes out as soon as they are ready.
const settleRefresh = 200 * time.Millisecond

// refreshEvery is how often an active pull request's state is looked at.
const refreshEvery = time.Second

// maxHistory bounds the samples kept per model for the comment's trend.
const maxHistory = 48

func newPulls(d *Daemon, rc Repository, gh *scm.Client) (*pulls, error) {
	dir := filepath.Join(d.stateDir, "pulls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pull requests: %w", err)
	}
	p := &pulls{
		d: d, repo: rc.Name, fullName: rc.GitHub.Repo, branch: rc.Branch, gh: gh,
		interval: rc.GitHub.CommentInterval.D(), statusURL: rc.GitHub.StatusURL,
		file: filepath.Join(dir, rc.Name+".json"), log: d.log.With("repo", rc.Name), now: time.Now,
		records: map[int]*prRecord{}, kicks: map[int]chan struct{}{},
	}
	if p.interval == 0 {
		p.interval = 10 * time.Second
	}
	p.pollEvery = max(rc.Interval.D(), minPollEvery)
	data, err := os.ReadFile(p.file)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("pull requests: %w", err)
	default:
		if err := json.Unmarshal(data, &p.records); err != nil {
			return nil, fmt.Errorf("pull requests: %s is corrupt (%w); move it away to start afresh: comments are found again by their marker", p.file, err)
		}
		for _, r := range p.records {
			r.edits = pullrequest.Edits{Interval: p.interval, OnGitHub: r.OnGitHub}
			if r.OnGitHub != "" {
				r.edits.LastSent = time.Time{}.Add(time.Nanosecond) // known on GitHub: an equal rendering is not sent again
			}
		}
	}
	return p, nil
}

// start resumes the pull requests left unfinished by the last run.
func (p *pulls) start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctx = ctx
	for n, r := range p.records {
		if !r.Done {
			p.wakeLocked(n)
		}
	}
	if p.gh != nil {
		p.wg.Go(func() { p.poll(ctx, p.pollEvery) })
	}
}

// wait waits for the workers to stop (ctx of start cancelled).
func (p *pulls) wait() { p.wg.Wait() }

// sighting is what an event or the poll saw of a pull request.
type sighting struct {
	n          int
	head       string
	fork       bool
	intoBranch bool
	closed     bool
	merged     bool
}

// event takes a pull_request delivery.
func (p *pulls) event(ev webhooks.PullRequest) {
	pr := ev.Event.GetPullRequest()
	if pr == nil || ev.Number == 0 {
		return
	}
	head := pr.GetHead()
	s := sighting{
		n: ev.Number, head: head.GetSHA(), intoBranch: pr.GetBase().GetRef() == p.branch,
		fork:   head.GetRepo().GetFullName() == "" || !strings.EqualFold(head.GetRepo().GetFullName(), pr.GetBase().GetRepo().GetFullName()),
		closed: ev.Action == "closed", merged: pr.GetMerged(),
	}
	if p.see(s) {
		p.log.Info("pull request event", "pr", ev.Number, "action", ev.Action, "head", shortSHA(s.head), "fork", s.fork, "delivery", ev.Delivery)
	}
}

// sightingOf is what GitHub's API says of a pull request.
func (p *pulls) sightingOf(pr scm.PullRequest) sighting {
	return sighting{n: pr.Number, head: pr.HeadSHA, fork: pr.Fork(), intoBranch: pr.BaseRef == p.branch, closed: pr.State == "closed", merged: pr.Merged}
}

// see records what was seen of a pull request and wakes its worker when it
// changed anything; it reports whether it did.
func (p *pulls) see(s sighting) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.records[s.n]
	if r == nil {
		if !s.intoBranch || s.closed {
			return false // not into production, or closed before Merlin knew it
		}
		r = &prRecord{edits: pullrequest.Edits{Interval: p.interval}}
		p.records[s.n] = r
	}
	before := r.PR
	r.PR.Number, r.PR.HeadSHA, r.PR.Fork = s.n, s.head, s.fork
	switch {
	case s.closed:
		r.PR.Closed, r.PR.Merged = true, s.merged
	case !s.intoBranch:
		// Retargeted away from production: it is not previewed any more.
		r.PR.Closed = true
	default:
		r.PR.Closed, r.PR.Merged = false, false
	}
	if r.PR == before && before.HeadSHA != "" {
		return false // a repeated event: the worker already knows
	}
	r.Done, r.changed = false, p.now()
	p.wakeLocked(s.n)
	return true
}

// poll catches what webhooks missed (a delivery lost, the daemon down, a
// webhook not set up yet): every pollEvery it lists the open pull requests
// into the branch, conditionally (an unchanged list is a 304, which GitHub
// does not count against the rate limit), and asks about the ones it
// believes open that are not listed any more.
func (p *pulls) poll(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *pulls) pollOnce(ctx context.Context) {
	open, err := p.gh.OpenPulls(ctx, p.branch)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("cannot list the open pull requests; webhooks still work", "err", err)
		}
		return
	}
	listed := map[int]bool{}
	for _, pr := range open {
		listed[pr.Number] = true
		if p.see(p.sightingOf(pr)) {
			p.log.Info("pull request seen by polling", "pr", pr.Number, "head", shortSHA(pr.HeadSHA))
		}
	}
	p.mu.Lock()
	var gone []int
	for n, r := range p.records {
		if !r.PR.Closed && !listed[n] {
			gone = append(gone, n)
		}
	}
	p.mu.Unlock()
	slices.Sort(gone)
	for _, n := range gone {
		pr, err := p.gh.PullRequest(ctx, n)
		if err != nil {
			p.log.Warn("cannot read a pull request no longer listed as open", "pr", n, "err", err)
			continue
		}
		if p.see(p.sightingOf(*pr)) {
			p.log.Info("pull request closed, seen by polling", "pr", n, "merged", pr.Merged)
		}
	}
}

// approve pins sha as the head a writer's `/merlin preview` allowed.
func (p *pulls) approve(n int, sha string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.records[n]; r != nil && !r.PR.Closed {
		r.PR.ApprovedSHA, r.changed = sha, p.now()
		p.wakeLocked(n)
	}
}

// known returns what the loop knows of pull request n.
func (p *pulls) known(n int) (pullrequest.PR, []reconciler.PreviewResult, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.records[n]
	if r == nil {
		return pullrequest.PR{}, nil, false
	}
	return r.PR, slices.Clone(r.Results), true
}

// learn records a pull request that the loop heard of only through a
// comment (its opening was missed, e.g. before the webhook was set up).
func (p *pulls) learn(pr *scm.PullRequest) pullrequest.PR {
	p.see(p.sightingOf(*pr))
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.records[pr.Number]; r != nil {
		return r.PR
	}
	return pullrequest.PR{Number: pr.Number, HeadSHA: pr.HeadSHA, Fork: pr.Fork(), Closed: true, Merged: pr.Merged}
}

// kick makes pull request n's worker look again.
func (p *pulls) kick(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.records[n] != nil {
		p.wakeLocked(n)
	}
}

// wakeLocked wakes pull request n's worker, starting it if needed.
func (p *pulls) wakeLocked(n int) {
	if p.ctx == nil {
		return // not started: start wakes every unfinished one
	}
	if k, ok := p.kicks[n]; ok {
		select {
		case k <- struct{}{}:
		default:
		}
		return
	}
	k := make(chan struct{}, 1)
	k <- struct{}{}
	p.kicks[n] = k
	p.wg.Go(func() { p.work(p.ctx, n, k) })
}

// work is pull request n's worker: it syncs on every wake-up and when
// sync asks to look again.
func (p *pulls) work(ctx context.Context, n int, kick chan struct{}) {
	var timer *time.Timer
	var wake <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-wake:
		}
		again, done := p.sync(ctx, n)
		if timer != nil {
			timer.Stop()
		}
		wake = nil
		if done {
			p.mu.Lock()
			if len(kick) == 0 { // an event since would need this worker
				delete(p.kicks, n)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			continue
		}
		if !again.IsZero() {
			timer = time.NewTimer(max(time.Until(again), 0))
			wake = timer.C
		}
	}
}

// sync brings pull request n's previews, comment and statuses in line with
// what is known of it. It returns when to look again (zero: at the next
// event) and whether the pull request needs nothing more.
func (p *pulls) sync(ctx context.Context, n int) (again time.Time, done bool) {
	p.mu.Lock()
	r := p.records[n]
	if r == nil { // finished and forgotten while this worker was woken
		p.mu.Unlock()
		return time.Time{}, true
	}
	pr, changed := r.PR, r.changed
	head := pr.HeadSHA
	p.mu.Unlock()
	repo := p.d.repoNamed(p.repo)
	var rec *reconciler.Reconciler
	if repo != nil {
		rec = repo.rec.Load()
	}
	if rec == nil { // not leading, or not started yet
		return p.now().Add(time.Second), false
	}
	now := p.now()
	if retry, ok := p.preview(ctx, repo, rec, r, &pr); !ok {
		return retry, false
	}
	pr.StatusURL = p.statusPage()
	reports := p.reports(r, pr, rec.Status(), now)
	if settle := changed.Add(max(p.interval, settleFor)); now.Before(settle) && unsettled(pr, r, reports) {
		return minTime(settle, now.Add(settleRefresh)), false
	}
	body := pullrequest.Render(pullrequest.Comment{PR: pr, Models: reports}, 0)
	r.edits = r.edits.Offer(body)
	var next []pullrequest.CommitStatus
	if pr.HeadSHA != "" {
		for _, rep := range reports {
			next = append(next, pullrequest.StatusOf(pr, rep))
		}
	}
	wrote := p.report(ctx, r, pr, next, now)
	p.mu.Lock()
	if r.PR.HeadSHA == head { // the fetched head moved on, and no event said so yet
		r.PR.HeadSHA = pr.HeadSHA
	}
	r.PR.StatusURL = pr.StatusURL
	over := (pr.Closed && !pr.Merged) || (pr.Merged && mergedOver(pr, reports))
	settled := r.edits.Pending == "" && len(pullrequest.StatusesToSend(r.Sent, next)) == 0
	r.Done = over && settled
	if r.Done {
		// Forgotten: a late event about it is ignored, and a reopening
		// finds the comment again by its marker.
		delete(p.records, n)
	}
	p.saveLocked()
	p.mu.Unlock()
	if r.Done {
		p.log.Info("pull request done", "pr", n, "merged", pr.Merged)
		return time.Time{}, true
	}
	return p.nextLook(r, pr, wrote, now), false
}

// nextLook says when a pull request's worker looks again (zero: at the
// next event): after a backoff when GitHub failed, when the next edit is
// due, and soon while previews or a rollout move.
func (p *pulls) nextLook(r *prRecord, pr pullrequest.PR, wrote bool, now time.Time) time.Time {
	if !wrote && r.failing > 0 {
		return now.Add(min(time.Duration(1<<min(r.failing, 6))*time.Second, time.Minute))
	}
	_, again := r.edits.Due(now)
	if active := r.Previewed != "" || pr.Merged; active {
		// Stages and figures move: look again soon (locally; GitHub is
		// written only when a status changes or an edit is due).
		if next := now.Add(min(p.interval, refreshEvery)); again.IsZero() || next.Before(again) {
			again = next
		}
	}
	return again
}

// statusPage is the status page's address for comments and statuses.
func (p *pulls) statusPage() string {
	if p.statusURL == "" && len(p.d.lns) > 0 {
		return "http://" + p.d.APIAddr() + "/"
	}
	return p.statusURL
}

// preview applies the previews pr's state asks for: the head's models
// while it is open (for a fork, only a head a writer approved), none once
// it is closed or merged. It reports false, and when to retry, when
// previews could not be brought in line.
func (p *pulls) preview(ctx context.Context, repo *repo, rec *reconciler.Reconciler, r *prRecord, pr *pullrequest.PR) (time.Time, bool) {
	n := pr.Number
	remove := pr.Closed || pr.Merged || pr.ForkWaiting()
	switch {
	case remove && r.Previewed == "":
		return time.Time{}, true
	case remove:
		return p.removePreviews(ctx, repo, rec, r, *pr)
	}
	want := pr.HeadSHA
	if pr.Fork {
		want = pr.ApprovedSHA
	}
	if r.Previewed != "" && r.Previewed == want {
		return time.Time{}, true
	}
	sha, err := repo.src.FetchPull(ctx, n)
	if err != nil {
		p.mu.Lock()
		r.HeadError = err.Error()
		p.mu.Unlock()
		r.fetchFailures++
		wait := min(5*time.Second<<min(r.fetchFailures-1, 6), 5*time.Minute)
		level := slog.LevelWarn
		if r.fetchFailures > 1 {
			level = slog.LevelDebug // said once; the status and comment show it
		}
		p.log.Log(ctx, level, "cannot fetch a pull request's head; retrying", "pr", n, "in", wait, "err", err)
		return p.now().Add(wait), false
	}
	r.fetchFailures = 0
	if sha != want {
		// The head moved on since the event (its own event follows), or a
		// fork was pushed to after its approval.
		pr.HeadSHA = sha
		if pr.Fork {
			return p.preview(ctx, repo, rec, r, pr) // waiting again: remove
		}
	}
	start := time.Now()
	results, err := rec.PreviewRevision(ctx, n, sha)
	switch {
	case ctx.Err() != nil:
		return time.Time{}, false
	case errors.Is(err, reconciler.ErrSuperseded):
		return p.now().Add(time.Second), false // a later change of the pull request's previews won: look again
	}
	p.mu.Lock()
	if err != nil {
		r.HeadError, r.Results = err.Error(), nil
		p.log.Warn("pull request head cannot be previewed", "pr", n, "sha", shortSHA(sha), "err", err)
	} else {
		r.HeadError, r.Results = "", results
		p.log.Info("pull request previewed", "pr", n, "sha", shortSHA(sha), "models", len(results), "took", time.Since(start).Round(time.Millisecond))
	}
	r.Previewed = sha
	p.mu.Unlock()
	r.base, r.history = map[string]metrics.Snapshot{}, map[string][]pullrequest.Sample{}
	return time.Time{}, true
}

// removePreviews removes pull request pr's previews (closed, merged, or
// a fork's head not approved).
func (p *pulls) removePreviews(ctx context.Context, repo *repo, rec *reconciler.Reconciler, r *prRecord, pr pullrequest.PR) (time.Time, bool) {
	n := pr.Number
	if err := rec.RemovePreviews(ctx, n); err != nil {
		p.log.Warn("cannot remove a pull request's previews; retrying", "pr", n, "err", err)
		return p.now().Add(time.Second), false
	}
	if pr.Closed && !pr.Merged {
		if err := repo.src.ForgetPull(n); err != nil {
			p.log.Warn("cannot forget a pull request's head", "pr", n, "err", err)
		}
	}
	p.log.Info("pull request previews removed", "pr", n, "closed", pr.Closed, "merged", pr.Merged)
	p.mu.Lock()
	r.Previewed = ""
	if !pr.Merged { // a merged one's results name the versions being rolled out
		r.Results = nil
	}
	p.mu.Unlock()
	return time.Time{}, true
}

// reports builds the comment's models: the head's changed models, with
// production's status and what the previews measured.
func (p *pulls) reports(r *prRecord, pr pullrequest.PR, st reconciler.Status, now time.Time) []pullrequest.Report {
	var out []pullrequest.Report
	if r.HeadError != "" && !pr.Closed {
		out = append(out, pullrequest.Report{Status: serving.ModelStatus{Name: "merlin.yaml"}, Error: r.HeadError, ErrorReason: serving.ReasonManifest})
	}
	for _, res := range r.Results {
		if !res.Changed {
			continue
		}
		rep := reportOf(res, st.Models)
		p.measure(r, &rep, now)
		out = append(out, rep)
	}
	return out
}

// reportOf is a changed model of a pull request beside production's
// status of it (none for a model production does not serve).
func reportOf(res reconciler.PreviewResult, production []serving.ModelStatus) pullrequest.Report {
	rep := pullrequest.Report{Status: serving.ModelStatus{Name: cmp.Or(res.Model, res.File)}, Version: res.Version, Error: res.Error, ErrorReason: res.Reason, Note: res.Note}
	if i := slices.IndexFunc(production, func(m serving.ModelStatus) bool { return m.Name == res.Model }); i >= 0 {
		rep.Status = production[i]
	}
	return rep
}

// measure fills a report's figures from the router's counters: the pull
// request's version since it was previewed (its counters hold nothing
// but the preview's traffic) beside production's stable version over the
// same window. Other targets' counters are not in this process: their
// figures stay empty.
func (p *pulls) measure(r *prRecord, rep *pullrequest.Report, now time.Time) {
	stats := p.d.stats
	if stats == nil || rep.Version == "" {
		return
	}
	if r.base == nil {
		r.base, r.history = map[string]metrics.Snapshot{}, map[string][]pullrequest.Sample{}
	}
	window := func(version string) metrics.Snapshot {
		s := stats.Lookup(version)
		if s == nil {
			return metrics.Snapshot{At: now}
		}
		cur := s.Snapshot(now)
		b, ok := r.base[version]
		if !ok || cur.Requests < b.Requests {
			b = cur
			r.base[version] = b
		}
		return cur.Sub(b)
	}
	rep.Preview = measureOf(window(rep.Version))
	if stable := rep.Status.Stable(); stable != "" && stable != rep.Version {
		rep.Production = measureOf(window(stable))
	}
	h := r.history[rep.Version]
	if rep.Preview.Compared > 0 && (len(h) == 0 || h[len(h)-1].Agreement != rep.Preview.Agreement || h[len(h)-1].P99 != rep.Preview.P99) {
		h = append(h, pullrequest.Sample{At: now, Agreement: rep.Preview.Agreement, P99: rep.Preview.P99})
		if len(h) > maxHistory {
			h = h[len(h)-maxHistory:]
		}
		r.history[rep.Version] = h
	}
	rep.History = slices.Clone(h)
}

func measureOf(s metrics.Snapshot) pullrequest.Measure {
	m := pullrequest.Measure{Requests: s.Requests, Errors: s.Errors, Compared: s.Agree + s.Disagree, P50: s.Quantile(0.5), P99: s.Quantile(0.99)}
	if m.Compared > 0 {
		m.Agreement = float64(s.Agree) / float64(m.Compared)
	}
	return m
}

// report writes the comment (when an edit is due) and the statuses that
// changed, and says whether all of it went out.
func (p *pulls) report(ctx context.Context, r *prRecord, pr pullrequest.PR, next []pullrequest.CommitStatus, now time.Time) bool {
	if p.gh == nil {
		r.edits = r.edits.Sent(r.edits.Pending, now) // nothing to write to: previews only
		return true
	}
	ok := true
	if due, _ := r.edits.Due(now); due {
		body := r.edits.Pending
		if err := p.writeComment(ctx, r, pr.Number, body); err != nil {
			p.log.Warn("cannot write the pull request's comment; retrying", "pr", pr.Number, "err", err)
			ok = false
		} else {
			r.edits = r.edits.Sent(body, now)
			p.mu.Lock()
			r.OnGitHub = body
			p.mu.Unlock()
		}
	}
	for _, st := range pullrequest.StatusesToSend(r.Sent, next) {
		err := p.gh.SetStatus(ctx, st.SHA, scm.Status{Context: st.Context, State: scm.State(st.State), Description: st.Description, TargetURL: st.TargetURL})
		if err != nil {
			p.log.Warn("cannot set a commit status; retrying", "pr", pr.Number, "context", st.Context, "err", err)
			ok = false
			break
		}
		p.mu.Lock()
		r.Sent = pullrequest.Sent(r.Sent, []pullrequest.CommitStatus{st})
		p.mu.Unlock()
	}
	if ok {
		r.failing = 0
	} else {
		r.failing++
	}
	return ok
}

// writeComment edits the sticky comment, finding it by its marker first
// when its id is not known, and creating it when there is none.
func (p *pulls) writeComment(ctx context.Context, r *prRecord, n int, body string) error {
	if r.CommentID == 0 {
		c, err := p.gh.FindComment(ctx, n, pullrequest.Marker(n))
		if err != nil {
			return err
		}
		if c == nil {
			c, err = p.gh.CreateComment(ctx, n, body)
			if err != nil {
				return err
			}
			p.setComment(r, c.ID)
			return nil
		}
		p.setComment(r, c.ID)
	}
	_, err := p.gh.EditComment(ctx, r.CommentID, body)
	if scm.IsNotFound(err) { // deleted by someone: found or made again next time
		p.setComment(r, 0)
	}
	return err
}

func (p *pulls) setComment(r *prRecord, id int64) {
	p.mu.Lock()
	r.CommentID = id
	p.saveLocked()
	p.mu.Unlock()
}

// saveLocked writes the records. A failure is logged: the worst a lost
// record costs is one marker lookup and statuses written again.
func (p *pulls) saveLocked() {
	data, err := json.Marshal(p.records)
	if err == nil {
		err = atomicfile.Write(p.file, data, 0o600)
	}
	if err != nil {
		p.log.Warn("cannot save the pull requests' state", "file", p.file, "err", err)
	}
}

// changedModels maps the models pull request n changes to the manifest
// that governs them on the production branch (CODEOWNERS is read there):
// the previewed head's changed models, or, before a head was previewed (a
// fork awaiting `/merlin preview`), production's models whose directory
// the head touches.
func (p *pulls) changedModels(ctx context.Context, n int, production []serving.ModelStatus) (map[string]string, error) {
	prodFile := func(name, fallback string) string {
		for _, m := range production {
			if m.Name == name {
				return m.File
			}
		}
		return fallback
	}
	out := map[string]string{}
	_, results, _ := p.known(n)
	if len(results) > 0 {
		for _, res := range results {
			if res.Changed && res.Model != "" {
				out[res.Model] = prodFile(res.Model, res.File)
			}
		}
		return out, nil
	}
	repo := p.d.repoNamed(p.repo)
	if repo == nil {
		return out, nil
	}
	rev, ok := repo.src.Current()
	if !ok {
		return out, nil
	}
	sha, err := repo.src.FetchPull(ctx, n)
	if err != nil {
		return nil, err
	}
	paths, _, err := repo.src.ChangedFull(ctx, rev.SHA, sha)
	if err != nil {
		return nil, err
	}
	for _, m := range production {
		dir := path.Dir(m.File)
		if slices.ContainsFunc(paths, func(f string) bool { return dir == "." || f == dir || strings.HasPrefix(f, dir+"/") }) {
			out[m.Name] = m.File
		}
	}
	return out, nil
}

// unsettled reports whether a pull request's previews are still on their
// way (building, starting).
func unsettled(pr pullrequest.PR, r *prRecord, reports []pullrequest.Report) bool {
	if r.Previewed == "" && !pr.Closed && !pr.Merged && !pr.ForkWaiting() {
		return true // its head is not previewed yet (a fetch being retried)
	}
	for _, rep := range reports {
		switch pullrequest.StageOf(pr, rep) {
		case pullrequest.StageBuilding, pullrequest.StageStarting:
			return true
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// mergedOver reports whether a merged pull request's models finished
// their rollouts.
func mergedOver(pr pullrequest.PR, reports []pullrequest.Report) bool {
	for _, rep := range reports {
		switch pullrequest.StageOf(pr, rep) {
		case pullrequest.StageServing, pullrequest.StageRolledBack, pullrequest.StageSuperseded, pullrequest.StageBroken, pullrequest.StageError:
		default:
			return false
		}
	}
	return true
}

func shortSHA(sha string) string { return sha[:min(len(sha), 8)] }

// repoNamed returns the daemon's repository called name.
func (d *Daemon) repoNamed(name string) *repo {
	for _, r := range d.repos {
		if r.cfg.Name == name {
			return r
		}
	}
	return nil
}
