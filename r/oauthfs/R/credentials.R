#' OAuth credentials for an integration
#'
#' The current access token of the integration with guid `audience`, read
#' from `<mount>/<guid>/access_token`. oauthfs refreshes the token when it
#' is read, so call this each time you need a token rather than keeping
#' one. Never print or log the token.
#'
#' @param audience The integration's guid (in either case), from
#'   [findOAuthIntegration()] or [getOAuthIntegrations()].
#' @inheritParams getOAuthIntegrations
#' @return A list:
#' \describe{
#'   \item{access_token}{The token, a string.}
#'   \item{token_type}{`"Bearer"`.}
#'   \item{expiry}{When the token expires, a `POSIXct` in UTC; `NA` when it
#'     does not expire. It is read just before the token, so it is never
#'     later than the token's own expiry.}
#'   \item{audience}{The guid.}
#' }
#' When no token can be had it signals an error (see [oauthfs-package]):
#' of class `oauthfs_not_signed_in` when you are not signed in,
#' `oauthfs_expired` (also `oauthfs_not_signed_in`) when you must sign in
#' again, `oauthfs_io_error` when the provider or the broker is down,
#' `oauthfs_not_found` when no integration has that guid, and
#' `oauthfs_no_mount` when nothing is mounted at `mount`; each is also of
#' class `oauthfs_error` and names the path it tried.
#' @examples
#' \dontrun{
#' guid <- Sys.getenv("GITHUB_INTEGRATION_ID")
#' creds <- tryCatch(getOAuthCredentials(audience = guid),
#'   oauthfs_not_signed_in = function(e) {
#'     message(conditionMessage(e))
#'     NULL
#'   }
#' )
#' if (!is.null(creds)) cat("Token expires at:", format(creds$expiry), "\n")
#' }
#' @export
getOAuthCredentials <- function(audience, mount = oauthfs_mount()) {
  mount <- oauthfs_mount(mount)
  check_string(audience, "audience")
  guid <- tolower(audience)
  if (!grepl(guid_pattern, guid)) {
    read_index(mount) # a missing mount says so first
    oauthfs_abort("oauthfs_not_found", sprintf(
      "oauthfs: '%s' is not an integration's guid (at %s); find one with findOAuthIntegration(name = )",
      audience, mount
    ), path = file.path(mount, audience), mount = mount, guid = audience)
  }
  dir <- file.path(mount, guid)
  # The expiry first: should a refresh come between the two reads, the
  # expiry is the older token's, never later than the token's own. When
  # both fail, the error names the token's path.
  expiry <- mount_read(file.path(dir, "expiry"))
  token <- mount_read(file.path(dir, "access_token"))
  if (!expiry$ok && token$ok) token_error(mount, guid, expiry)
  if (!token$ok) token_error(mount, guid, token)
  if (!nzchar(token$text)) {
    token_error(mount, guid, list(path = token$path, reason = "empty token"))
  }
  list(
    access_token = token$text,
    token_type = "Bearer",
    expiry = parse_expiry(expiry$text),
    audience = guid
  )
}

# parse_expiry turns the expiry file's RFC 3339 UTC time into a POSIXct;
# an empty file (a token that does not expire) is NA.
parse_expiry <- function(s) {
  if (!nzchar(s)) {
    return(.POSIXct(NA_real_, tz = "UTC"))
  }
  as.POSIXct(s, format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC")
}

# The errno messages of Linux (glibc, in English) and what they mean on an
# oauthfs mount (docs/design.md, "Errors a reader sees").
errno_classes <- c(
  "No such file or directory" = "oauthfs_not_found",
  "Required key not available" = "oauthfs_not_signed_in",
  "Key has expired" = "oauthfs_expired",
  "Input/output error" = "oauthfs_io_error",
  "Transport endpoint is not connected" = "oauthfs_no_mount",
  "Permission denied" = "oauthfs_error" # not the mount's owner
)

# The meta.json statuses that explain a failed read, for a reason in
# another language or none.
status_classes <- c(
  not_signed_in = "oauthfs_not_signed_in",
  expired = "oauthfs_expired",
  error = "oauthfs_io_error"
)

# token_error signals the error for a failed read r (path, reason) of an
# integration's token or expiry: by the errno's message, else by the
# integration's status after the failure.
token_error <- function(mount, guid, r) {
  class <- unname(errno_classes[as.character(r$reason)[1]])
  if (identical(class, "oauthfs_no_mount")) no_mount(mount, r)
  index <- read_index(mount) # signals oauthfs_no_mount when there is none
  info <- NULL
  for (i in index) if (identical(i$guid, guid)) info <- i
  if (is.na(class)) {
    class <- if (is.null(info)) "oauthfs_not_found" else unname(status_classes[as.character(info$status)[1]])
  }
  if (is.na(class)) class <- "oauthfs_error"
  name <- if (is.null(info)) guid else info$name
  why <- sprintf("%s: %s", r$path, r$reason)
  detail <- if (!is.null(info$error)) paste0("; ", info$error) else ""
  message <- switch(class,
    oauthfs_not_found = sprintf(
      "oauthfs: no integration with guid '%s' at %s (%s); find one with findOAuthIntegration(name = )",
      guid, mount, why
    ),
    oauthfs_not_signed_in = sprintf(
      "oauthfs: not signed in to '%s' (%s); sign in with: oauthfs login '%s'", name, why, name
    ),
    oauthfs_expired = sprintf(
      "oauthfs: the sign-in to '%s' has expired (%s%s); sign in again with: oauthfs login '%s'",
      name, why, detail, name
    ),
    oauthfs_io_error = sprintf(
      "oauthfs: no token for '%s' now: the provider or the broker is unreachable (%s%s); try again later",
      name, why, detail
    ),
    sprintf("oauthfs: cannot read the token of '%s' (%s)", name, why)
  )
  if (identical(class, "oauthfs_expired")) class <- c(class, "oauthfs_not_signed_in")
  oauthfs_abort(class, message,
    path = r$path, mount = mount, guid = guid, name = info$name, reason = r$reason
  )
}
