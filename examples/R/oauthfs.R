# OAuth credentials from an oauthfs mount, in the shape of rstudioapi.
#
# Source this file (needs jsonlite). It mirrors rstudioapi's
# getOAuthCredentials(audience), getOAuthIntegrations(),
# getOAuthIntegration(guid) and findOAuthIntegration(name, authenticated).
# Every call reads the mount, so tokens are always current (oauthfs
# refreshes them on read).

oauthfs_mount <- function() Sys.getenv("OAUTHFS_MOUNT", "/oauth")

# All integrations: a list of lists (guid, name, authenticated, ...).
getOAuthIntegrations <- function() {
  jsonlite::fromJSON(file.path(oauthfs_mount(), "integrations.json"), simplifyVector = FALSE)
}

# One integration by guid; an error if there is none.
getOAuthIntegration <- function(guid) {
  meta <- file.path(oauthfs_mount(), guid, "meta.json")
  if (!file.exists(meta)) stop(sprintf("no integration with guid '%s'", guid), call. = FALSE)
  jsonlite::fromJSON(meta, simplifyVector = FALSE)
}

# Integrations whose name matches the regular expression name (NULL: any)
# and whose sign-in state is authenticated (NULL: either).
findOAuthIntegration <- function(name = NULL, authenticated = NULL) {
  Filter(function(i) {
    (is.null(name) || grepl(name, i$name)) &&
      (is.null(authenticated) || identical(i$authenticated, authenticated))
  }, getOAuthIntegrations())
}

# Credentials for the integration with guid audience: a list with
# access_token, token_type and expiry. When you are not signed in, or the
# sign-in expired, it signals an error of class oauthfs_not_signed_in.
getOAuthCredentials <- function(audience) {
  info <- getOAuthIntegration(audience)
  dir <- file.path(oauthfs_mount(), audience)
  token <- tryCatch(
    suppressWarnings(readChar(file.path(dir, "access_token"), file.size(file.path(dir, "access_token")), useBytes = TRUE)),
    error = function(e) NULL
  )
  if (is.null(token) || length(token) == 0) {
    info <- getOAuthIntegration(audience) # the status after the failed read
    stop(structure(class = c("oauthfs_not_signed_in", "error", "condition"), list(
      message = sprintf("not signed in to %s (%s); run: oauthfs login '%s'", info$name, info$status, info$name),
      call = NULL
    )))
  }
  expiry <- readLines(file.path(dir, "expiry"), warn = FALSE)
  list(access_token = token, token_type = "Bearer", expiry = if (length(expiry)) expiry else NULL)
}
