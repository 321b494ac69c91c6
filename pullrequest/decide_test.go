package pullrequest

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	access := fakeAccess{"writer": {"write", "write"}, "owner": {"write", "write"}, "reader": {"read", "read"}}
	owners := ParseCodeowners("/models/iris/ @owner\n")
	models := map[string]string{"iris": "models/iris/merlin.yaml", "wine": "models/wine/merlin.yaml"}
	fork := PR{Number: 8, HeadSHA: "head1", Fork: true}
	ev := func(login, body string) CommentEvent {
		return CommentEvent{Action: "created", Body: body, Login: login, SenderType: "User", OnPR: true}
	}
	tests := []struct {
		name   string
		e      CommentEvent
		action Action
		models []string
		reply  string // a fragment; "" for no reply
		pinned string
	}{
		{"owner promotes", ev("owner", "/merlin promote iris"), Execute, []string{"iris"}, "", ""},
		{"writer, not owner", ev("writer", "/merlin promote iris"), Answer, nil, "@writer: /merlin promote iris was not run: CODEOWNERS", ""},
		{"writer, uncovered model", ev("writer", "/merlin pause wine"), Execute, []string{"wine"}, "", ""},
		{"no model among several", ev("owner", "/merlin rollback"), Answer, nil, "It changes: iris, wine.", ""},
		{"reader gets no reply", ev("reader", "/merlin promote wine"), Ignore, nil, "", ""},
		{"reader asking for help gets no reply", ev("reader", "/merlin help"), Ignore, nil, "", ""},
		{"unknown command", ev("writer", "/merlin deploy"), Answer, nil, "is not a Merlin command", ""},
		{"writer approves a fork", ev("writer", "/merlin preview"), Answer, nil, "CODEOWNERS", ""}, // preview covers iris too
		{"owner approves a fork", ev("owner", "/merlin PREVIEW"), Execute, []string{"iris", "wine"}, "", "head1"},
		{"bot", CommentEvent{Action: "created", Body: "/merlin promote iris", Login: "owner", SenderType: "Bot", OnPR: true}, Ignore, nil, "", ""},
		{"edit", CommentEvent{Action: "edited", Body: "/merlin promote iris", Login: "owner", SenderType: "User", OnPR: true}, Ignore, nil, "", ""},
	}
	for _, tt := range tests {
		d, err := Decide(context.Background(), tt.e, fork, models, access, nil, owners)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if d.Action != tt.action || !reflect.DeepEqual(d.Models, tt.models) || d.PR.ApprovedSHA != tt.pinned {
			t.Errorf("%s: %+v; want action %d, models %q, pinned %q", tt.name, d, tt.action, tt.models, tt.pinned)
		}
		if (tt.reply == "") != (d.Reply == "") || !strings.Contains(d.Reply, tt.reply) {
			t.Errorf("%s: reply %q, want one containing %q", tt.name, d.Reply, tt.reply)
		}
	}
}
