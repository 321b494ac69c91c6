package pullrequest

import (
	"strings"
	"testing"
	"unicode/utf8"

	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/serving"
)

func TestStatusOf(t *testing.T) {
	open := PR{Number: 5, HeadSHA: "abc", StatusURL: "https://m.example/"}
	broken := previewing(5)
	broken.Error, broken.ErrorReason = "iris/merlin.yaml:3:7: unknown field \"c\"", serving.ReasonManifest
	infra := previewing(5)
	infra.Error, infra.ErrorReason = "fetch refs/pull/5/head: connection refused", serving.ReasonSource
	rolling := previewing(5)
	rolling.Status.Desired, rolling.Status.Phase, rolling.Status.Step, rolling.Status.Steps = rolling.Version, rollout.Progressing, 2, 4
	long := previewing(5)
	long.Error, long.ErrorReason = strings.Repeat("é", 300), serving.ReasonBuild

	tests := []struct {
		name  string
		p     PR
		r     Report
		state CommitState
		desc  string
	}{
		{"previewing", open, previewing(5), Success, "previewing: agreement 98.2% of 1,190, p99 12 ms (prod 11 ms), errors 0.08%"},
		{"fork waits", PR{Number: 5, HeadSHA: "abc", Fork: true}, previewing(5), Pending, "fork: waiting for a writer's /merlin preview"},
		{"manifest error is the pr's failure", open, broken, Failure, `iris/merlin.yaml:3:7: unknown field "c"`},
		{"source error is merlin's", open, infra, Error, "fetch refs/pull/5/head: connection refused"},
		{"merged rolling out", PR{Number: 5, HeadSHA: "abc", Merged: true}, rolling, Pending, "rolling out iris-sklearn-1234abcd: step 2/4"},
	}
	for _, tt := range tests {
		st := StatusOf(tt.p, tt.r)
		if st.State != tt.state || st.Description != tt.desc || st.Context != "merlin/iris-sklearn" || st.SHA != "abc" {
			t.Errorf("%s: %+v; want %s %q", tt.name, st, tt.state, tt.desc)
		}
	}
	st := StatusOf(open, long)
	if n := utf8.RuneCountInString(st.Description); n != MaxDescription || !utf8.ValidString(st.Description) || !strings.HasSuffix(st.Description, "…") {
		t.Errorf("long description: %d runes, valid %v: %q", n, utf8.ValidString(st.Description), st.Description)
	}
	if st.TargetURL != "https://m.example/" {
		t.Errorf("target_url = %q", st.TargetURL)
	}
	if st := StatusOf(PR{Number: 5, StatusURL: "javascript:x"}, previewing(5)); st.TargetURL != "" {
		t.Errorf("unsafe target_url kept: %q", st.TargetURL)
	}
}

func TestStatusesToSend(t *testing.T) {
	a := CommitStatus{SHA: "s1", Context: "merlin/a", State: Pending, Description: "starting"}
	b := CommitStatus{SHA: "s1", Context: "merlin/b", State: Success, Description: "previewing: agreement 98.0% of 120"}
	aDone := a
	aDone.State, aDone.Description = Success, "previewing"
	aNewHead := a
	aNewHead.SHA = "s2"

	sent := Sent(nil, []CommitStatus{a, b})
	tests := []struct {
		name string
		next []CommitStatus
		want int
	}{
		{"nothing changed", []CommitStatus{a, b}, 0},
		{"one changed", []CommitStatus{aDone, b}, 1},
		{"new head sha", []CommitStatus{aNewHead, b}, 1},
		{"new model", []CommitStatus{a, b, {SHA: "s1", Context: "merlin/c", State: Pending}}, 1},
		{"only figures changed", []CommitStatus{a, {SHA: "s1", Context: "merlin/b", State: Success, Description: "previewing: agreement 97.25% of 7"}}, 0},
	}
	for _, tt := range tests {
		if got := StatusesToSend(sent, tt.next); len(got) != tt.want {
			t.Errorf("%s: %d to send (%+v), want %d", tt.name, len(got), got, tt.want)
		}
	}
	if got := StatusesToSend(sent, []CommitStatus{{SHA: "s1", Context: "merlin/b", State: Success, Description: "previewing: agreement 99.5% of 4,000"}}); len(got) != 0 {
		t.Errorf("a status whose figures changed is sent again: %+v", got)
	}
	if len(sent) != 2 || Sent(sent, []CommitStatus{aDone})["merlin/a"] != aDone || sent["merlin/a"] != a {
		t.Error("Sent does not record, or modifies its argument")
	}
}
