package pullrequest

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Access tells a user's permission on the repository, as GitHub's
// GET /repos/{owner}/{repo}/collaborators/{user}/permission answers it:
// its `permission` (admin, write, read, none; maintain and triage map to
// write and read) and `role_name` (admin, maintain, write, triage, read or
// a custom role).
type Access interface {
	Permission(ctx context.Context, login string) (permission, roleName string, err error)
}

// Teams tells team membership (GET /orgs/{org}/teams/{team}/memberships/{user}).
type Teams interface {
	IsTeamMember(ctx context.Context, org, team, login string) (bool, error)
}

// CanWrite decides from the permission API's answer whether a user may
// run commands: write, maintain or admin. A custom role built on write
// reports permission "write".
func CanWrite(permission, roleName string) bool {
	ok := []string{"admin", "maintain", "write"}
	return slices.Contains(ok, strings.ToLower(permission)) || slices.Contains(ok, strings.ToLower(roleName))
}

// Verdict is the outcome of an authorization.
type Verdict struct {
	Allowed bool
	// Reason says why not, for the reply.
	Reason string
	// Silent: the commenter cannot write to the repository, so the refusal
	// gets no reply. Anyone can comment on a public pull request; replying
	// to them would let strangers spend Merlin's API budget and flood the
	// pull request.
	Silent bool
}

// Authorize decides whether login may act on the models whose manifests
// are files (their directories are what CODEOWNERS is checked for). owners
// is the production branch's CODEOWNERS (nil when it has none); it is
// checked at execution, not when the pull request opened. teams may be nil
// when no CODEOWNERS names a team.
func Authorize(ctx context.Context, a Access, teams Teams, owners *Codeowners, login string, files []string) (Verdict, error) {
	perm, role, err := a.Permission(ctx, login)
	if err != nil {
		return Verdict{}, fmt.Errorf("permission of %s: %w", login, err)
	}
	if !CanWrite(perm, role) {
		return Verdict{Silent: true, Reason: fmt.Sprintf("commands need write access to the repository; @%s has %s.", login, cmp.Or(role, perm, "none"))}, nil
	}
	for _, f := range files {
		dir := path.Dir(f)
		list, rule, ok := owners.DirOwners(dir)
		if !ok || len(list) == 0 {
			continue
		}
		in, err := isOwner(ctx, teams, list, login)
		if err != nil {
			return Verdict{}, err
		}
		if !in {
			// The owners are named but not mentioned (@ is escaped): a
			// refusal should not notify a whole team.
			names := make([]string, len(list))
			for i, o := range list {
				names[i] = o.String()
			}
			return Verdict{Reason: fmt.Sprintf("CODEOWNERS (line %d, %s) gives %s to %s; @%s is not among them.",
				rule.Line, Text(rule.Pattern, 200), Text(dir, 200), Text(strings.Join(names, " "), 500), login)}, nil
		}
	}
	return Verdict{Allowed: true}, nil
}

// isOwner reports whether login is one of owners: by login (GitHub logins
// are case-insensitive) or through a team. An email owner cannot be
// matched: GitHub maps it to an account by its verified emails, which the
// API does not show; another owner of the line must act.
func isOwner(ctx context.Context, teams Teams, owners []Owner, login string) (bool, error) {
	for _, o := range owners {
		if o.Login != "" && strings.EqualFold(o.Login, login) {
			return true, nil
		}
	}
	for _, o := range owners {
		if o.Team == "" || teams == nil {
			continue
		}
		in, err := teams.IsTeamMember(ctx, o.Org, o.Team, login)
		if err != nil {
			return false, fmt.Errorf("membership of %s in %s/%s: %w", login, o.Org, o.Team, err)
		}
		if in {
			return true, nil
		}
	}
	return false, nil
}
