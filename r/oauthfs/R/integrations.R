#' All OAuth integrations
#'
#' The integrations an administrator configured, signed in or not, as
#' `integrations.json` on the mount lists them: sorted by name. Reading
#' them never causes a token refresh or a network call.
#'
#' @param mount The path of the oauthfs mount; see [oauthfs_mount()].
#' @return A list with one list per integration, with the fields:
#' \describe{
#'   \item{guid}{The integration's identifier, for [getOAuthCredentials()].}
#'   \item{name, display_name}{Its name and the name shown to people.}
#'   \item{client_id, auth_url, token_url}{Its OAuth client.}
#'   \item{scopes}{The scopes it asks for, a character vector.}
#'   \item{authenticated}{`TRUE` when you are signed in (status `signed_in` or `error`).}
#'   \item{status}{`"signed_in"`, `"not_signed_in"`, `"expired"` (sign in again)
#'     or `"error"` (the last refresh failed for a transient reason).}
#'   \item{expiry}{When the current token expires (RFC 3339), or `NULL`.}
#'   \item{granted_scopes}{The scopes the provider granted, a character vector.}
#'   \item{error}{Why the last refresh failed, or `NULL`.}
#'   \item{account}{The provider account that signed in, or `NULL`.}
#' }
#' An empty list when there are none. An error of class `oauthfs_no_mount`
#' when nothing is mounted at `mount`.
#' @examples
#' \dontrun{
#' for (i in getOAuthIntegrations()) {
#'   cat(sprintf("%s (%s): %s\n", i$name, i$guid,
#'               if (i$authenticated) "authenticated" else "not authenticated"))
#' }
#' }
#' @export
getOAuthIntegrations <- function(mount = oauthfs_mount()) {
  read_index(oauthfs_mount(mount))
}

#' One OAuth integration
#'
#' The integration with the given guid, as in [getOAuthIntegrations()].
#' Like 'rstudioapi', it is the same as `findOAuthIntegration(guid = guid)`.
#'
#' @param guid The integration's guid (in either case).
#' @inheritParams getOAuthIntegrations
#' @return A list of the integration's fields (see
#'   [getOAuthIntegrations()]), or `NULL` when no integration has that guid.
#'   An error of class `oauthfs_no_mount` when nothing is mounted at `mount`.
#' @examples
#' \dontrun{
#' integration <- getOAuthIntegration("a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d")
#' if (!is.null(integration)) {
#'   cat("Found:", integration$name, "\n")
#'   cat("Scopes:", paste(integration$scopes, collapse = ", "), "\n")
#' }
#' }
#' @export
getOAuthIntegration <- function(guid, mount = oauthfs_mount()) {
  check_string(guid, "guid")
  findOAuthIntegration(guid = guid, mount = mount)
}

#' Find an OAuth integration
#'
#' The first integration, in the order of [getOAuthIntegrations()] (by
#' name), that matches every criterion given.
#'
#' @param name A regular expression the integration's name must match;
#'   anchor it (`"^GitHub$"`) for an exact match.
#' @param display_name A regular expression for the display name.
#' @param guid The guid, matched exactly but in either case.
#' @param authenticated `TRUE` for an integration you are signed in to,
#'   `FALSE` for one you are not.
#' @inheritParams getOAuthIntegrations
#' @return A list of the integration's fields (see
#'   [getOAuthIntegrations()]), or `NULL` when none matches. An error of
#'   class `oauthfs_no_mount` when nothing is mounted at `mount`.
#' @examples
#' \dontrun{
#' findOAuthIntegration(name = "^github$")
#' findOAuthIntegration(authenticated = TRUE)
#' findOAuthIntegration(name = "^github$", authenticated = TRUE)$guid
#' }
#' @export
findOAuthIntegration <- function(name = NULL, display_name = NULL, guid = NULL,
                                 authenticated = NULL, mount = oauthfs_mount()) {
  for (s in c("name", "display_name", "guid")) {
    if (!is.null(get(s))) check_string(get(s), s)
  }
  if (!is.null(authenticated) &&
    (!is.logical(authenticated) || length(authenticated) != 1L || is.na(authenticated))) {
    stop("authenticated must be TRUE, FALSE or NULL", call. = FALSE)
  }
  matches <- function(pattern, value) {
    is.null(pattern) || (!is.null(value) && grepl(pattern, value))
  }
  for (i in getOAuthIntegrations(mount)) {
    if (matches(name, i$name) && matches(display_name, i$display_name) &&
      (is.null(guid) || identical(tolower(guid), i$guid)) &&
      (is.null(authenticated) || identical(authenticated, i$authenticated))) {
      return(i)
    }
  }
  NULL
}
