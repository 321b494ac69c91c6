package github

import "merlin.dev/merlin/pullrequest"

// The client is what the pull-request loop authorizes commands with.
var (
	_ pullrequest.Access = (*Client)(nil)
	_ pullrequest.Teams  = (*Client)(nil)
)
