# A small Shiny app for studiopool's `shiny` template (examples/studiopool.yaml).
#
# studiopool starts it with shiny::runApp(host = "127.0.0.1", port = <a free port>) and puts it
# behind the gateway at /s/<instance id>/ with the prefix stripped: the app is written as if it
# lived at /, and Shiny's relative URLs (and its WebSocket, opened relative to the page) follow.
library(shiny)

ui <- fluidPage(
  titlePanel("studiopool: Shiny example"),
  sidebarLayout(
    sidebarPanel(
      sliderInput("n", "Number of draws", min = 10, max = 1000, value = 100, step = 10),
      # A plain <select> (selectize = FALSE): keyboard-accessible and easy to drive from a browser test.
      selectInput("dist", "Distribution",
        choices = c("Normal" = "norm", "Uniform" = "unif", "Exponential" = "exp"),
        selectize = FALSE
      )
    ),
    mainPanel(
      textOutput("summary"),
      plotOutput("hist", height = "300px")
    )
  )
)

server <- function(input, output, session) {
  draws <- reactive({
    set.seed(42)
    switch(input$dist,
      norm = rnorm(input$n),
      unif = runif(input$n),
      exp = rexp(input$n)
    )
  })
  output$summary <- renderText({
    sprintf("%s: %d draws, mean %.3f", input$dist, length(draws()), mean(draws()))
  })
  output$hist <- renderPlot({
    hist(draws(), main = NULL, xlab = input$dist, col = "steelblue", border = "white")
  })
}

shinyApp(ui, server)
