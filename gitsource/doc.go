// Package gitsource fetches the watched Git repositories and tells the daemon
// what changed.
//
// A [Source] tracks one branch of one remote. [Source.Head] asks the remote
// for the branch head without transferring objects (the ls-remote handshake),
// so it is cheap enough to call every second. [Source.Fetch] makes the head
// commit and its tree available locally with a shallow (depth 1),
// single-branch fetch using the explicit refspec
// +refs/heads/BRANCH:refs/remotes/origin/BRANCH. [Source.Tree] exposes a
// fetched commit as an [io/fs.FS] read straight from the object store (there
// is no checkout), and [Source.Changed] lists the paths that differ between
// two fetched commits. Changed is a tree diff, not a log walk, so it works
// across force-pushes and unrelated histories.
//
// A [Poller] drives a Source for the daemon: it polls Head every interval,
// fetches when the head moved or when [Poller.Trigger] is called (webhooks),
// delivers [Event] values, and keeps a [Status]. The first event of a run,
// and any event whose previous revision is no longer stored, is marked Full:
// Changed then lists every path of the new tree and the consumer should
// resynchronise everything. Failures back off exponentially (jittered,
// capped, never faster than the interval) and the last good revision stays
// readable through Tree until the remote is back.
//
// # Object store and its growth policy
//
// Objects live on disk under Config.CacheDir, never only in memory:
//
//	CacheDir/CURRENT       name of the active store directory
//	CacheDir/store-XXXX/   a bare repository (go-git filesystem storage)
//
// Every fetch adds one small pack (depth 1 means only the objects of the new
// head that are not already present). Commits fetched earlier stay in the
// store, pinned by refs/merlin/keep/<sha> for the last Config.KeepRevisions
// fetched heads, so Changed(old, new) keeps working. To stop the store from
// growing without bound over thousands of commits, the store is compacted
// after Config.CompactEvery fetches, or as soon as it is larger than both
// Config.MaxCacheBytes and twice its size right after the previous
// compaction: a new store directory is written containing one pack with only
// the objects reachable from the kept revisions' trees (no history), CURRENT
// is switched atomically, and the previous directory is removed at the next
// switch (one generation of grace, so an fs.FS reader that is mid-read keeps
// working). Compaction is local; it does not touch the network.
//
// [Source.FetchPull] fetches a pull request's head (refs/pull/<n>/head, as
// GitHub publishes it) the same way into refs/merlin/pull/<n>, beside the
// branch; compactions and re-clones carry those heads over until
// [Source.ForgetPull] drops the ref.
//
// # Shallow-fetch pitfalls and the re-clone fallback
//
// go-git's incremental fetches into shallow repositories have known failure
// modes ("object not found" after shallow clones, go-git#129 and #305;
// "reference has changed concurrently", #314; a head force-pushed back to an
// older commit whose objects are never sent, #1443). Every fetch is
// therefore verified: the head commit, all its trees and all blobs must be in
// the store. When an incremental fetch fails for a reason other than the
// remote being unreachable, refusing credentials, or missing the branch, or
// when verification fails, the Source clones the branch afresh (depth 1)
// into a new store directory, copies the kept revisions' objects over from
// the old store where they are still readable, and switches to it.
// Connections broken mid-transfer count as the remote's fault until three
// happen in a row. A kept revision whose objects cannot be copied is
// dropped; Changed from such a revision falls back to "everything in the new
// tree changed" and the Poller marks the event Full.
//
// # Transports and credentials
//
// URLs may be file:///abs, /abs/path, git://host/repo, http(s)://host/repo,
// ssh://user@host:port/path or scp-like git@host:path (ssh as user git
// unless another user is given). HTTPS uses basic auth with Auth.Token as the
// password and Auth.Username (default "git") as the user; credentials embedded
// in an https URL are moved into the auth method and stripped from the URL.
// Credentials never appear in logs, errors or Status: every error leaving
// this package passes through a redactor that removes the token and any
// user:password@ part of a URL.
//
// For https remotes with a private CA, set Config.CABundle (PEM, added to the
// system pool); Config.InsecureSkipTLS disables verification and is meant
// for tests and lab setups only.
//
// For ssh, Auth.SSHKeyFile names the private key (unencrypted); without it
// go-git uses the ssh agent (SSH_AUTH_SOCK) and ~/.ssh/known_hosts. When
// Auth.SSHKnownHosts is set the host key must match it. When it is empty ANY
// host key is accepted and a warning is logged once per Source: this keeps
// first-time setups working but offers no protection against a
// man-in-the-middle, so production configurations should set it.
//
// # Concurrency
//
// All methods of Source and Poller are safe for concurrent use. Fetches are
// serialised; reads (Tree, Changed) use a separate reader on the same store
// and are not blocked by network transfers. Every network operation honours
// its context, including dials that go-git itself does not bound.
package gitsource
